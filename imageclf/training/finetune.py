"""Fine-tuning a pretrained network (fastai's ``fine_tune``): the new head trains alone first,
and BatchNorm layers may keep their pretrained statistics.

While only the head trains, every other parameter stops requiring gradients, so the backward
pass stops at the head: those epochs cost little more than a forward pass.
"""

from __future__ import annotations

from torch import nn

from imageclf.inference.embed import head_layer


def train_only_head(model: nn.Module, head_only: bool) -> None:
    """Freeze everything but the linear head (``head_only``), or let every parameter train."""
    head = {id(p) for p in head_layer(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(not head_only or id(p) in head)


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: its running statistics stay the pretrained ones
    (batches of 16-32 images give noisy estimates); its scale and shift still train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
