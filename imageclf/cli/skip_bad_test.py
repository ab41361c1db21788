"""An unreadable image stops predict and evaluate (by design) with one line that names the way on."""

import shutil

import pytest

from imageclf.cli.testing import exit_code


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_stopping_at_an_unreadable_file_says_skip_bad_carries_on(command, tmp_path, tiny_folders, trained_run,
                                                                  capsys):
    data = tmp_path / "d"
    shutil.copytree(tiny_folders / "test", data)
    (data / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n...")
    target = [data] if command == "evaluate" else [data / "NORMAL"]
    assert exit_code([command, trained_run, *target, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0]
    assert err[0].endswith("(--skip-bad skips unreadable images and carries on)")
    assert exit_code([command, trained_run, *target, "-q", "--skip-bad"]) == 0
    assert "skipped" in capsys.readouterr().err
