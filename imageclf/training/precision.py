"""Training precision: fp32, or bf16 autocast where the hardware computes it natively.

``auto`` means bf16 on CUDA and on a CPU with bf16 arithmetic (AMX or AVX512-BF16), fp32 on any
other CPU; ``bf16`` asks for it on such a CPU too, where it is emulated (many times slower): that
case is warned of; ``fp32`` never. The weights, the optimiser and the validation pass stay fp32;
only the training step's forward pass runs in bf16. On the 2-core AVX512-BF16 EPYC it trains
xray-5block 1.4x and catsdogs-2conv 1.6-1.8x faster than fp32 with the same validation figures
within the spread over seeds (BENCHMARKS.md, Speed); results are not bit-equal to an fp32 run's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imageclf.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def use_bf16(precision: str, device: torch.device, native_cpu: bool | None = None) -> bool:
    """Whether the training step runs under bf16 autocast (see TrainOptions.precision);
    ``native_cpu``: whether the CPU has bf16 arithmetic (default: :func:`cpu_has_native_bf16`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cpu":
        return bool(cpu_has_native_bf16() if native_cpu is None else native_cpu)
    return device.type == "cuda"


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
