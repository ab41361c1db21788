"""``imageclf export`` and ``imageclf predict --backend onnx`` from the command line."""

from __future__ import annotations

import pytest

from imageclf.cli import main
from imageclf.inference.auto import choose_backend

pytest.importorskip("onnxruntime")


def run_cli(argv, capsys) -> str:
    capsys.readouterr()
    main([str(a) for a in argv])
    return capsys.readouterr().out


def test_export_then_predict_with_onnx_matches_torch(trained_run, tiny_folders, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert run_cli(["export", trained_run, "--onnx", out], capsys).strip() == str(out)
    assert out.stat().st_size > 1000
    images = tiny_folders / "test" / "NORMAL"
    torch_lines = run_cli(["predict", trained_run, images, "-q"], capsys).splitlines()
    for source in (trained_run, out):
        onnx_lines = run_cli(["predict", source, images, "-q", "--backend", "onnx"], capsys).splitlines()
        assert len(onnx_lines) == len(torch_lines) > 5 and onnx_lines[0] == torch_lines[0]
        for a, b in zip(onnx_lines[1:], torch_lines[1:]):
            # Same path and class; probabilities printed to 4 decimals agree to the last one.
            assert a.split()[:2] == b.split()[:2]
            # Then the probabilities and the OOD score (to 4 significant digits), and whether it is outside.
            assert [float(x) for x in a.split()[2:-2]] == pytest.approx([float(x) for x in b.split()[2:-2]],
                                                                        abs=1.5e-4)
            assert float(a.split()[-2]) == pytest.approx(float(b.split()[-2]), rel=2e-3)
            assert a.split()[-1] == b.split()[-1]


def test_unknown_backend_is_a_one_line_error(trained_run, tiny_folders, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(trained_run), str(tiny_folders / "test"), "--backend", "tflite"])
    assert exit_info.value.code == 2
    assert "unknown backend 'tflite'" in capsys.readouterr().err


def test_serve_rejects_bad_settings_before_loading(trained_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(trained_run), "--max-queue", "0"])
    assert exit_info.value.code == 2
    assert "max_queue must be positive" in capsys.readouterr().err


def test_export_int8_measures_and_predict_auto_uses_it(trained_run, tiny_folders, tmp_path, capsys):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    capsys.readouterr()
    main(["export", str(run), "--int8"])
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(run / "model.onnx"), str(run / "model.int8.onnx")]
    assert "int8 on 64 validation images: accuracy" in err and "--backend auto:" in err
    images = tiny_folders / "test" / "NORMAL"
    # For a job this small, auto weighs each backend's start-up too: not always the file's "auto".
    measured = json.loads((run / "backends.json").read_text())["backends"]
    chosen = choose_backend(run, list(measured), images=len(list(images.iterdir())))
    lines = run_cli(["predict", run, images, "-q", "--backend", "auto"], capsys).splitlines()
    reference = run_cli(["predict", run, images, "-q", "--backend", chosen], capsys).splitlines()
    assert lines == reference and len(lines) > 5
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--int8"])
    assert exit_info.value.code == 2 and "use --force" in capsys.readouterr().err
