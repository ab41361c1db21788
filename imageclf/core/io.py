"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash, a kill -9 or a full disk leaves either the old file or the new one, never half.
A write that fails (disk full, read-only, no permission) raises an :class:`ImageclfError`
naming the file, and leaves no temp file behind; a kill -9 may leave one, which
:func:`remove_stale_temps` clears on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from imageclf.core.errors import ConfigError, ImageclfError

# Ours (".model.safetensors.k3j2_x.tmp") and safetensors' own (".tmpAb12Cd", it writes a
# temp file and renames it too).
_TEMP_NAMES = re.compile(r"^\..+\.tmp$|^\.tmp[A-Za-z0-9]{6}$")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it replaces ``target`` atomically."""
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # Set now, not at creation: a writer may have replaced the temp file (safetensors does).
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_folder(target.parent)
    except OSError as exc:
        raise ImageclfError(f"{target}: cannot write it ({exc.strerror or exc}); the previous "
                            "version, if any, is unchanged") from exc
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut could otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename has happened all the same
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files that a killed writer left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMP_NAMES.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe
# (the server writes nothing, but a library user's threads might).
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | Path, write: Callable[[Path], None]) -> None:
    """Atomically write ``target`` with a writer that takes a path (e.g. safetensors)."""
    with atomic_path(target) as tmp:
        write(tmp)


def atomic_save_safetensors(target: str | Path, tensors: dict, metadata: dict[str, str]) -> None:
    """Atomically write ``tensors`` as a safetensors file (a full disk: :class:`ImageclfError`)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except OSError:
            raise
        except Exception as exc:  # SafetensorError: its I/O failures are not OSError subclasses
            if "I/O error" not in str(exc):
                raise
            reason = re.sub(r" \(os error \d+\)$", "", str(exc).rpartition("I/O error: ")[2])
            raise OSError(reason) from exc

    atomic_write_with(target, write)


def check_output_folder(folder: str | Path, force: bool, hint: str = "") -> bool:
    """Refuse to write into ``folder`` when it holds anything, unless ``force``.

    Returns whether it already holds something (so a forced caller knows to clear what it
    owns); a path that exists and is not a folder is refused even with ``force``. ``hint``
    is appended to the message (e.g. " or --resume to continue it").
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: exists and is not a folder")
    if folder.exists() and any(folder.iterdir()):
        if not force:
            raise ConfigError(f"{folder}: already exists and is not empty; use --force to overwrite it{hint}")
        return True
    return False


def cache_root() -> Path:
    """imageclf's cache folder: ``$IMAGECLF_CACHE``, else ``$XDG_CACHE_HOME/imageclf`` (default
    ``~/.cache/imageclf``). Decoded images and converted pretrained weights live below it."""
    base = os.environ.get("IMAGECLF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "imageclf")
    return Path(base)


def check_output_file(path: str | Path, force: bool) -> None:
    """Refuse to replace an existing file unless ``force`` (the file twin of :func:`check_output_folder`)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists; use --force to overwrite it")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a large file never sits in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
