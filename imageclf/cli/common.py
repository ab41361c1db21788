"""Shared CLI pieces: the Typer app, consoles and option parsing."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console

from imageclf.core.errors import BadImageError, ConfigError

app = typer.Typer(
    name="imageclf",
    help="Train, evaluate, explain and serve image classifiers (chest X-rays first).\n\n"
         "DATA is a folder of class subfolders, a folder with train/ val/ test/ split folders, "
         "a CSV with path,label columns, or a MedMNIST-style .npz. RUN is a model folder "
         "written by 'imageclf train'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# --backend of every command that runs a model (predict, evaluate, serve): which engine runs it.
Backend = Annotated[str, typer.Option(
    "--backend", help="torch; onnx (ONNX Runtime) or openvino on the CPU, without torch (RUN/model.onnx when "
                      "exported from these weights, else exported in memory); onnx-int8 / openvino-int8 "
                      "(RUN/model.int8.onnx, 'imageclf export RUN --int8'); auto: the fastest that 'imageclf "
                      "export' measured equal on the model's validation images.")]
# Tables piped to a file or another program are not cut at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)


def parse_settings(items: list[str] | None) -> dict[str, str]:
    """``--set key=value`` pairs as a dict (values are parsed later, as YAML scalars)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_names(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError(f"--class-names needs at least two comma-separated names, got {text!r}")
    return names


@contextlib.contextmanager
def skip_bad_hint() -> Iterator[None]:
    """An unreadable image stops a command that has ``--skip-bad`` (by design): its one line
    says that the flag carries on past it."""
    try:
        yield
    except BadImageError as exc:
        if "--skip-bad" in exc.reason:
            raise
        raise BadImageError(exc.path, f"{exc.reason} (--skip-bad skips unreadable images and carries on)"
                            ) from None
