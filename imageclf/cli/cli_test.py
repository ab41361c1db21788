"""The command line: help texts, the happy path, and one-line errors with exit code 2."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

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


# --- every training flag reaches fit, whichever way the command trains ---------------------------

# Each `imageclf train` flag: (its arguments, what fit must receive: the recipe's field or the
# option's value). Values differ from the defaults, so a flag dropped on the way fails.
TRAIN_FLAGS = {
    "--recipe": (["--recipe", "mnist-basic"], "recipe", "name", "mnist-basic"),
    "--out": (["--out", "elsewhere"], "out", None, "elsewhere"),
    "--img-size": (["--img-size", "30"], "recipe", "img_size", 30),
    "--epochs": (["--epochs", "7"], "recipe", "epochs", 7),
    "--batch-size": (["--batch-size", "5"], "recipe", "batch_size", 5),
    "--lr": (["--lr", "0.25"], "recipe", "lr", 0.25),
    "--channels": (["--channels", "3"], "recipe", "channels", 3),
    "--seed": (["--seed", "11"], "recipe", "seed", 11),
    "--val-fraction": (["--val-fraction", "0.3"], "recipe", "val_fraction", 0.3),
    "--set": (["--set", "mixup=0.4"], "recipe", "mixup", 0.4),
    "--pretrained": (["--pretrained", "w.safetensors"], "recipe", "pretrained", "w.safetensors"),
    "--class-names": (["--class-names", "neg,pos"], "options", "class_names", ["neg", "pos"]),
    "--path-column": (["--path-column", "FILE"], "options", "path_column", "FILE"),
    "--label-column": (["--label-column", "Label"], "options", "label_column", "Label"),
    "--group-by": (["--group-by", "patient"], "options", "group_by", "patient"),
    "--exclude": (["--exclude", "excluded.csv"], "options", "exclude", "excluded.csv"),
    "--device": (["--device", "cuda:3"], "options", "device", "cuda:3"),  # fit is patched: never opened
    "--workers": (["--workers", "3"], "options", "workers", 3),
    "--cache": (["--cache", "disk"], "options", "cache", "disk"),
    "--cache-dir": (["--cache-dir", "/nowhere/cache"], "options", "cache_dir", "/nowhere/cache"),
    "--skip-bad": (["--skip-bad"], "options", "skip_bad", True),
    "--resume": (["--resume"], "options", "resume", True),
    "--force": (["--force"], "options", "force", True),
    "--quiet": (["--quiet"], "options", "quiet", True),
    "--precision": (["--precision", "bf16"], "options", "precision", "bf16"),
    "--log": (["--log", "tensorboard", "--log", "mlflow"], "options", "log", ("tensorboard", "mlflow")),
    "--tracking-uri": (["--tracking-uri", "sqlite:///t.db"], "options", "tracking_uri", "sqlite:///t.db"),
    "--ood-keep": (["--ood-keep", "0.95"], "options", "ood_keep", 0.95),
}
# Flags that read a CSV's columns train on this CSV instead of the npz (see _grouped_csv).
CSV_FLAGS = {"--path-column", "--label-column", "--group-by", "--exclude"}
# How to train, not what: the one train flag each of these leaves out, and why.
NOT_THROUGH = {"--folds": "it chooses the path", "--nproc": "refused with --folds; launches processes"}


def _command_flags(name: str) -> set[str]:
    import typer

    import imageclf.cli.app  # noqa: F401  (registers the commands on the app)
    from imageclf.cli.common import app

    command = typer.main.get_command(app).commands[name]
    return {p.opts[0] for p in command.params if p.param_type_name == "option"} - {"--help"}


def _record_fit(monkeypatch, module) -> list[dict]:
    """Patch ``module.fit`` to record what it is given and return a finished run's result."""
    from imageclf.training.loop import FitResult

    calls = []

    def fit(data, recipe, out, options=None, *, overrides=None, on_epoch=None):
        calls.append({"recipe": recipe, "overrides": overrides or {}, "out": Path(out), "options": options,
                      "data": data})
        figures = {"val_loss": 0.5, "val_accuracy": 0.5, "val_auc": 0.5, "best_epoch": 1,
                   "train_images": 1, "val_images": 1}
        return FitResult(Path(out), 1, figures, "cpu")

    monkeypatch.setattr(module, "fit", fit)
    return calls


def _received(call: dict, where: str, attr: str | None):
    from imageclf.recipes import resolve_recipe

    if where == "out":
        return call["out"]
    if where == "options":
        return getattr(call["options"], attr)
    return getattr(resolve_recipe(call["recipe"], call["overrides"]), attr)


def _grouped_csv(folder: Path) -> Path:
    """``folder/data.csv`` (file, label, patient: 8 patients of 2 images) and
    ``folder/excluded.csv`` listing one of its images."""
    images, labels = testing.synthetic_images(16, 28)
    paths = testing.write_images(folder / "img", images, labels, ["neg", "pos"])
    rows = [f"{p.relative_to(folder)},{['neg', 'pos'][k]},p{i % 8}"
            for i, (p, k) in enumerate(zip(paths, labels))]
    (folder / "data.csv").write_text("file,label,patient\n" + "\n".join(rows) + "\n")
    (folder / "excluded.csv").write_text(f"path,exclude\n{paths[0].relative_to(folder)},true\n")
    return folder / "data.csv"


def _check_data(flag: str, call: dict) -> None:
    """What a data flag did to the Dataset fit was given (on the plain path)."""
    data = call["data"]
    if flag == "--group-by":
        assert data.group_by == "patient" and data.splits["all"].groups is not None
    elif flag == "--exclude":
        assert len(data.excluded) == 1


def test_the_flag_table_covers_every_train_flag():
    assert _command_flags("train") == set(TRAIN_FLAGS) | set(NOT_THROUGH)


@pytest.mark.parametrize("path", ["plain", "folds"])
@pytest.mark.parametrize("flag", sorted(TRAIN_FLAGS))
def test_every_train_flag_reaches_fit(flag, path, tmp_path, tiny_npz, monkeypatch, capsys):
    from types import SimpleNamespace

    from imageclf.modelfile.artifact import CHECKPOINT_FILE

    monkeypatch.chdir(tmp_path)
    args, where, attr, want = TRAIN_FLAGS[flag]
    if path == "plain":
        calls = _record_fit(monkeypatch, importlib.import_module("imageclf.api"))
        loaded = SimpleNamespace(load=lambda path, device: SimpleNamespace(source=str(path)))
        monkeypatch.setattr(importlib.import_module("imageclf.api"), "Classifier", loaded)
        extra = []
    else:
        calls = _record_fit(monkeypatch, importlib.import_module("imageclf.training.folds"))
        extra = ["--folds", "2"]
        if flag == "--resume":  # fold 1 half-trained: the fold that --resume continues
            (tmp_path / "run" / "fold-1").mkdir(parents=True)
            (tmp_path / "run" / "fold-1" / CHECKPOINT_FILE).write_bytes(b"")
    data = _grouped_csv(tmp_path) if flag in CSV_FLAGS else tiny_npz
    argv = ["train", data, "--recipe", "catsdogs-2conv", "--out", "run", *extra, *args]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    got = _received(calls[0], where, attr)
    if where == "out":
        assert got == Path(want) / ("fold-1" if path == "folds" else "")
    else:
        assert got == want, f"{flag} did not reach fit through {path}"
    if path == "plain":
        _check_data(flag, calls[0])


# The train flags that `imageclf tune` shares, and what each trial's fit must receive from them.
TUNE_FLAGS = {flag: TRAIN_FLAGS[flag] for flag in (
    "--epochs", "--set", "--class-names", "--device", "--workers", "--cache", "--cache-dir",
    "--skip-bad", "--precision", "--log", "--tracking-uri", "--ood-keep", *sorted(CSV_FLAGS))}
TUNE_FLAGS["--recipe"] = (["--recipe", "mnist-basic"], "recipe", "name", "mnist-basic-tuned")
# Train flags tune has not, or gives its own meaning, and why.
TUNE_OWN = {
    "--img-size": "searched", "--batch-size": "searched", "--lr": "searched",
    "--seed": "tune's seeds the sampler (the recipe's: --set seed=N)",
    "--channels": "--set", "--val-fraction": "--set", "--pretrained": "--set",
    "--resume": "a search cannot resume", "--out": "holds the trials' folders",
    "--force": "overwrites --out; every trial writes its own folder afresh",
    "--quiet": "silences the trial lines; trials themselves never print",
}


def test_tune_has_every_train_flag_it_does_not_own():
    assert set(TUNE_FLAGS) | set(TUNE_OWN) == set(TRAIN_FLAGS)
    assert set(TUNE_FLAGS) <= _command_flags("tune")


@pytest.mark.parametrize("flag", sorted(TUNE_FLAGS))
def test_every_shared_flag_reaches_fit_through_tune(flag, tmp_path, tiny_npz, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = _record_fit(monkeypatch, importlib.import_module("imageclf.training.tune"))
    args, where, attr, want = TUNE_FLAGS[flag]
    data = _grouped_csv(tmp_path) if flag in CSV_FLAGS else tiny_npz
    argv = ["tune", data, "--recipe", "catsdogs-2conv", "--out", tmp_path / "t", "--trials", "1",
            "--sizes", "32", "--batch-sizes", "32", "-q", *args]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert _received(calls[0], where, attr) == want, f"{flag} did not reach fit through tune"
    assert calls[0]["options"].force and calls[0]["options"].quiet  # each trial: its own folder, silent
