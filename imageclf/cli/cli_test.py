"""The command line: help texts, the happy path, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from imageclf.cli import main
from imageclf.data import synthetic as testing


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


@pytest.mark.parametrize("command", ["", "train", "evaluate", "predict", "recipes", "models", "recipe"])
def test_help(command, capsys):
    code, out, _ = run_cli([command, "--help"] if command else ["--help"], capsys)
    assert code == 0 and "Usage" in out


def test_recipes_lists_seed_recipes_with_parameter_counts(capsys):
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0
    for name in ("xray-alexnet", "xray-4block", "xray-5block", "catsdogs-2conv", "mnist-basic"):
        assert name in out
    assert "1,467,137" in out and "203,434" in out


def test_train_evaluate_predict(tmp_path, tiny_npz, tiny_folders, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", tiny_npz, "--recipe", "mnist-basic", "--out", run, "--epochs", "1",
                              "--class-names", "neg,pos", "--set", "augment.horizontal_flip=true",
                              "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "horizontal_flip: true" in (run / "recipe.yaml").read_text()
    code, out, err = run_cli(["evaluate", run, tiny_npz, "--split", "test", "--json", tmp_path / "e.json",
                              "--quiet"], capsys)
    assert code == 0, err
    assert "precision" in out and "neg" in out and "confusion matrix" in out
    figures = json.loads((tmp_path / "e.json").read_text())
    assert {"accuracy", "roc_auc", "confusion_matrix", "per_class"} <= set(figures)
    assert figures["split"] == "test" and figures["n"] == 32
    images = testing.write_images(tmp_path / "new", *testing.synthetic_images(3, 28), ["neg", "pos"])
    code, out, err = run_cli(["predict", run, *images, "--csv", tmp_path / "p.csv", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "p.csv").read_text().startswith("path,predicted,p_neg,p_pos")
    assert len(out.strip().splitlines()) == 4


@pytest.mark.parametrize("case, fragment", [
    ("missing_data", "no such file or folder"),
    ("unknown_recipe", "unknown recipe 'nope'"),
    ("empty_class", "has no images"),
    ("one_class", "only one class"),
    ("corrupt_image", "broken.png"),
    ("csv_missing", "not found"),
    ("too_small", "needs an input of at least 94"),
    ("bad_set", "--set takes key=value"),
])
def test_train_errors_are_one_line_exit_2(case, fragment, tmp_path, capsys):
    data = testing.make_class_folders(tmp_path / "d", n=8)
    args = ["train", data, "--out", tmp_path / "run", "--epochs", "1", "--quiet", "--img-size", "32",
            "--recipe", "catsdogs-2conv"]
    if case == "missing_data":
        args[1] = tmp_path / "nowhere"
    elif case == "unknown_recipe":
        args[-1] = "nope"
    elif case == "empty_class":
        (data / "EMPTY").mkdir()
    elif case == "one_class":
        args[1] = testing.make_class_folders(tmp_path / "one", n=4, class_names=("a",))
    elif case == "corrupt_image":
        (data / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n...")
    elif case == "csv_missing":
        csv_file = testing.make_csv(tmp_path / "c" / "l.csv", n=8)
        csv_file.write_text(csv_file.read_text() + "gone.png,cat\n")
        args[1] = csv_file
    elif case == "too_small":
        args[-1] = "xray-5block"
    elif case == "bad_set":
        args += ["--set", "epochs"]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and fragment in " ".join(lines)
    assert "Traceback" not in err


def test_skip_bad_trains_and_reports(tmp_path, capsys):
    data = testing.make_class_folders(tmp_path / "d", n=16)
    (data / "NORMAL" / "broken.png").write_bytes(b"")
    code, out, err = run_cli(["train", data, "--out", tmp_path / "run", "--epochs", "1", "--img-size", "32",
                              "--recipe", "catsdogs-2conv", "--skip-bad", "--quiet"], capsys)
    assert code == 0
    assert "broken.png" in err and "skipped 1" in err


def test_model_folder_errors(tmp_path, tiny_npz, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["evaluate", tmp_path / "empty", tiny_npz], capsys)
    assert code == 2 and "no config.json" in err
    code, _, err = run_cli(["predict", tmp_path / "absent", tiny_npz], capsys)
    assert code == 2 and "no such model folder" in err


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "imageclf.cli", "train", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, fragment", [(["train"], "Missing argument"),
                                            (["train", "x", "--epochs", "abc"], "--epochs")])
def test_usage_errors_exit_2_without_traceback(args, fragment, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
