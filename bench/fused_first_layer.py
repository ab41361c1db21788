"""An experiment that did not pay: xray-5block's first layer (1-channel conv 3x3 + max-pool 2x2)
as one unfold + GEMM + max, instead of a convolution writing the full 126 x 126 x 32 map.

Each 2x2 pooling window's four 3x3 receptive fields fit in one 4x4 input patch, so the four
candidate outputs of every pooled position are a (16 -> 4 x 32) matrix product of the
unfolded input; the max over the four is the pooled output, and its index routes the
gradient. Outputs equal the reference exactly, gradients to float rounding; but torch's
max-with-indices over that axis costs more than the convolution and pooling it replaces
(BENCHMARKS.md, Speed, "What was tried").

usage: python -m bench.fused_first_layer [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # max_pool2d's scan order: the first maximum wins


def _kernels4(w: torch.Tensor) -> torch.Tensor:
    """(C, 1, 3, 3) -> (4 * C, 16): the 3x3 kernel placed at each offset of a 4x4 patch."""
    c = w.shape[0]
    w4 = w.new_zeros(4, c, 4, 4)
    for s, (dy, dx) in enumerate(OFFSETS):
        w4[s, :, dy:dy + 3, dx:dx + 3] = w.view(c, 3, 3)
    return w4.view(4 * c, 16)


class ConvPool(torch.autograd.Function):
    """max_pool2d(conv2d(x, w, b), 2) for a 1-channel x, valid 3x3 conv; NHWC memory out."""

    @staticmethod
    def forward(ctx, x, w, b):
        n, _, h, wd = x.shape
        ph, pw, c = (h - 2) // 2, (wd - 2) // 2, w.shape[0]
        patches = F.unfold(x[:, :, :2 * ph + 2, :2 * pw + 2], 4, stride=2).transpose(1, 2)  # (N, L, 16)
        cand = (patches @ _kernels4(w).t()).view(n, ph * pw, 4, c)
        best, arg = cand.max(2)
        best += b
        ctx.save_for_backward(patches, arg.to(torch.uint8))
        return best.view(n, ph, pw, c).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        patches, arg = ctx.saved_tensors
        n, c, ph, pw = g.shape
        g = g.permute(0, 2, 3, 1).reshape(n, ph * pw, c)
        gw = g.new_zeros(c, 3, 3)
        flat = patches.reshape(-1, 16)
        for s, (dy, dx) in enumerate(OFFSETS):
            gs = (g * (arg == s)).reshape(-1, c)
            gw += (gs.t() @ flat).view(c, 4, 4)[:, dy:dy + 3, dx:dx + 3]
        return None, gw.view(c, 1, 3, 3), g.sum((0, 1))


def _cpu_ms(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fused_first_layer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 32, 3)
    x = torch.rand(a.batch, 1, 128, 128)
    ref = F.max_pool2d(conv(x), 2)
    out = ConvPool.apply(x, conv.weight, conv.bias)
    g = torch.randn_like(ref)
    ref, out = ref.detach(), out.detach()
    gw_ref = torch.autograd.grad((F.max_pool2d(conv(x), 2) * g).sum(), conv.weight)[0]
    gw = torch.autograd.grad((ConvPool.apply(x, conv.weight, conv.bias) * g).sum(), conv.weight)[0]
    print(f"forward max |diff| {float((out - ref).abs().max()):.2e}; weight-gradient max |diff| "
          f"{float((gw - gw_ref).abs().max()):.2e} (of max {float(gw_ref.abs().max()):.1f})")
    xc, convc = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    gc = g.contiguous(memory_format=torch.channels_last)

    def ref_step():
        F.max_pool2d(convc(xc), 2).backward(gc)

    def fused_step():
        ConvPool.apply(x, conv.weight, conv.bias).backward(g)

    print(f"batch {a.batch}, {a.threads} thread(s), CPU ms per call:")
    print(f"  forward:          conv + max_pool {_cpu_ms(lambda: F.max_pool2d(convc(xc), 2)):6.2f}   "
          f"fused {_cpu_ms(lambda: ConvPool.apply(x, conv.weight, conv.bias)):6.2f}")
    print(f"  forward+backward: conv + max_pool {_cpu_ms(ref_step):6.2f}   fused {_cpu_ms(fused_step):6.2f}")


if __name__ == "__main__":
    main()
