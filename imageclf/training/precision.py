"""Training precision: fp32, or bf16 autocast where the hardware computes it natively.

``auto`` means bf16 on CUDA and fp32 on a CPU; ``bf16`` asks for it on a CPU too, which is fast
with AMX or AVX512-BF16 and emulated (many times slower) without them: that case is warned of.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imageclf.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether the training step runs under bf16 autocast (see TrainOptions.precision)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bf16 arithmetic (AMX or AVX512-BF16), from /proc/cpuinfo's flags;
    None where that cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith("flags")), []))
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def bf16_cpu_warning(amp: bool, device: torch.device, native: bool | None) -> str | None:
    # Without native bf16 the kernels emulate it: photo-resnet on a 2-core AVX2 EPYC trained at
    # 3.2 img/s in bf16 (one thread, two runs side by side) against 57 img/s in fp32 (two
    # threads, one run), so an unwarned bf16 run there costs hours.
    if amp and device.type == "cpu" and native is False:
        return ("--precision bf16 on a CPU without AMX or AVX512-BF16 is emulated and many times "
                "slower than fp32; use --precision auto or fp32 on this machine")
    return None
