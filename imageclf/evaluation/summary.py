"""``model.summary()``: a Keras-style layer table, and a drawn architecture diagram.

One forward pass of a zero image through the network, with a hook on every layer that
holds no other layer, records each call's output shape; parameters are counted per layer
(each shared layer once). The diagram is the same list drawn as boxes with matplotlib,
so no graphviz is needed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_write_bytes


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int

    def shape_text(self) -> str:
        return "(" + ", ".join(["None", *(str(s) for s in self.output_shape[1:])]) + ")"


@dataclass
class ModelSummary:
    """Layers in call order with output shapes and parameter counts, and the totals."""

    name: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total: int = 0
    trainable: int = 0
    buffers: int = 0

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable

    def to_text(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #")
        cells = [(f"{r.name} ({r.kind})", r.shape_text(), f"{r.params:,}") for r in self.rows]
        w0 = max(len(head[0]), *(len(c[0]) for c in cells)) if cells else len(head[0])
        w1 = max(len(head[1]), *(len(c[1]) for c in cells)) if cells else len(head[1])
        w2 = max(len(head[2]), *(len(c[2]) for c in cells)) if cells else len(head[2])
        width = w0 + w1 + w2 + 6
        line = lambda a, b, c: f"{a:<{w0}}   {b:<{w1}}   {c:>{w2}}"  # noqa: E731
        mb = self.total * 4 / 2**20
        out = [f'Model: "{self.name}"  input (None, {", ".join(map(str, self.input_shape))})',
               "=" * width, line(*head), "=" * width]
        out += [line(*c) for c in cells]
        out += ["=" * width, f"Total params: {self.total:,} ({mb:.2f} MB as float32)",
                f"Trainable params: {self.trainable:,}", f"Non-trainable params: {self.non_trainable:,}"]
        if self.buffers:
            out.append(f"Buffers (e.g. batch-norm statistics, not trained): {self.buffers:,}")
        out.append("-" * width)
        return "\n".join(out)

    __str__ = to_text

    def __repr__(self) -> str:
        return self.to_text()

    def to_dict(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape),
                "layers": [{"name": r.name, "type": r.kind, "output_shape": [None, *r.output_shape[1:]],
                            "params": r.params} for r in self.rows],
                "total_params": self.total, "trainable_params": self.trainable,
                "non_trainable_params": self.non_trainable, "buffers": self.buffers}

    def draw(self, path: str | Path | None = None, fmt: str | None = None) -> bytes:
        """The architecture as a column of boxes (PNG, or SVG for a .svg path); written if ``path``."""
        fmt = fmt or (Path(path).suffix.lstrip(".").lower() if path else "png")
        if fmt not in ("png", "svg"):
            raise ConfigError(f"{path}: the diagram can be .png or .svg, not .{fmt}")
        data = draw_diagram(self, fmt)
        if path is not None:
            atomic_write_bytes(path, data)
        return data


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    return None


def summarize(net: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> ModelSummary:
    """Summarise ``net`` for inputs of ``input_shape`` (C, H, W)."""
    summary = ModelSummary(name or type(net).__name__, tuple(input_shape))
    seen: set[int] = set()
    hooks = []

    def record(layer_name: str):
        def hook(module, _inputs, output):
            t = _first_tensor(output)
            params = 0
            if id(module) not in seen:
                seen.add(id(module))
                params = sum(p.numel() for p in module.parameters(recurse=False))
            summary.rows.append(LayerRow(layer_name, type(module).__name__,
                                         tuple(t.shape) if t is not None else (), params))
        return hook

    for layer_name, module in net.named_modules():
        has_children = any(True for _ in module.children())
        own_params = any(True for _ in module.parameters(recurse=False))
        if layer_name and (not has_children or own_params):
            hooks.append(module.register_forward_hook(record(layer_name)))
    was_training = net.training
    net.eval()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    params = {id(p): p for p in net.parameters()}.values()
    summary.total = sum(p.numel() for p in params)
    summary.trainable = sum(p.numel() for p in params if p.requires_grad)
    summary.buffers = sum(b.numel() for b in net.buffers())
    return summary


# Box colours by layer family (Okabe-Ito), so the diagram reads at a glance.
_FAMILY = [("Conv", "#A6D8F5"), ("Pool", "#F5CF7A"), ("Linear", "#8FD9BF"), ("Norm", "#E6B8D4"),
           ("Dropout", "#DDDDDD"), ("Flatten", "#F0E442"), ("ReLU", "#EEEEEE"), ("GELU", "#EEEEEE"),
           ("SiLU", "#EEEEEE"), ("Sigmoid", "#EEEEEE")]


def _colour(kind: str) -> str:
    return next((c for key, c in _FAMILY if key in kind), "#FFFFFF")


def draw_diagram(summary: ModelSummary, fmt: str = "png") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    boxes = [("input", "Input", "(None, " + ", ".join(map(str, summary.input_shape)) + ")", "")]
    boxes += [(r.name, r.kind, r.shape_text(), f"{r.params:,} params" if r.params else "")
              for r in summary.rows]
    step, box_h = 1.0, 0.72
    fig_h = 0.62 * len(boxes) + 1.0
    fig, ax = plt.subplots(figsize=(6.4, fig_h))
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(boxes) * step, 0.9)
    ax.axis("off")
    for i, (name, kind, shape, params) in enumerate(boxes):
        y = -i * step
        ax.add_patch(FancyBboxPatch((1.0, y - box_h / 2), 8.0, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.12", lw=1,
                                    facecolor=_colour(kind) if i else "#FFFFFF", edgecolor="#333333"))
        ax.text(1.25, y + 0.12, f"{name}: {kind}", fontsize=8.5, weight="bold", va="center")
        ax.text(1.25, y - 0.17, f"output {shape}", fontsize=7.5, va="center", family="monospace")
        if params:
            ax.text(8.8, y - 0.17, params, fontsize=7.5, va="center", ha="right", color="#333333")
        if i:
            ax.annotate("", xy=(5, y + box_h / 2), xytext=(5, y + step - box_h / 2),
                        arrowprops=dict(arrowstyle="->", color="#333333", lw=1))
    ax.set_title(f"{summary.name}: {summary.total:,} parameters", fontsize=11, pad=4)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
