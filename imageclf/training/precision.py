"""Training precision: fp32, or bf16 autocast where the hardware computes it natively.

``auto`` means bf16 on CUDA; on a CPU with bf16 arithmetic (AMX or AVX512-BF16) bf16 where a
training step of the model measures faster in it (:func:`bf16_pays`, timed at the start of the
run), else fp32; fp32 on any other CPU. ``bf16`` asks for it on any CPU, where it may be emulated
(many times slower): that case is warned of; ``fp32`` never. The weights, the optimiser and the
validation pass stay fp32; only the training step's forward pass runs in bf16. On the 2-core
AVX512-BF16 EPYC a bf16 step is 1.4x (xray-5block), 1.6-1.8x (catsdogs-2conv) and 1.9x
(mnist-basic) the fp32 one, with validation figures within the spread over seeds, but 0.78x for
EfficientNet-Lite0's depthwise convolutions (BENCHMARKS.md, Speed): hence measured, per model.
Results are not bit-equal to an fp32 run's.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

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


# bf16 is chosen only this much faster than fp32: near parity (EfficientNet-Lite0 measured 0.7-1.2x
# between processes) fp32 keeps runs reproducible; the seed CNNs measure 1.4-1.9x.
BF16_MARGIN = 1.2


def bf16_pays(model: nn.Module, example: torch.Tensor, steps: int = 2) -> tuple[bool, float]:
    """Whether a training step's forward and backward pass of ``model`` on a batch like
    ``example`` is BF16_MARGIN faster under bf16 autocast than in fp32 on this CPU, and how much
    (fp32 time / bf16 time, the best of ``steps`` each after one warm-up, interleaved). Timed on
    a copy: the model's weights, buffers (BatchNorm statistics) and the random state stay as
    they were."""
    probe = copy.deepcopy(model).train()
    rng = torch.get_rng_state()
    best = {False: float("inf"), True: float("inf")}
    try:
        for rep in range(steps + 1):
            for amp in (False, True):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    out = probe(example)
                out.float().sum().backward()
                probe.zero_grad(set_to_none=True)
                if rep:
                    best[amp] = min(best[amp], time.perf_counter() - start)
    finally:
        torch.set_rng_state(rng)
    speedup = best[False] / best[True]
    return speedup >= BF16_MARGIN, speedup
