"""Average several trained models into ONE model folder (``imageclf ensemble RUN... --out RUN``).

The result is an ordinary model folder: architecture ``ensemble``, whose builder makes
each member network from ``config.architecture_kwargs["members"]``; every member's
weights sit in the one ``model.safetensors`` under ``members.<i>.``. Its forward pass
averages the members' probabilities and returns logits of that average (the logit of
the mean for two classes, its log for more), so ``imageclf.load``, predict, evaluate,
calibrate, explain, serve and export treat it as any other network.

Out-of-distribution statistics (:mod:`imageclf.modelfile.ood`) travel too: each member scores
an input with its own, divided by its own threshold, and the ensemble's score is their mean,
past 1 out of distribution; when a member has none, the ensemble has none (and says so).

Members must share their classes (same names, same order) and their preprocessing (size,
channels, resize, mean, std): each then sees exactly the input it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from imageclf.core.errors import ConfigError
from imageclf.core.io import check_output_folder
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.sources import carve_of
from imageclf.modelfile.artifact import ModelConfig, build_model, load_weights, read_config, save_model
from imageclf.modelfile.card import write_card
from imageclf.modelfile.ood import OOD_FILE, combine_members, read_ood, save_ood
from imageclf.models.ensemble import EnsembleNet


def _check_compatible(configs: list, runs: list[str]) -> None:
    first = configs[0]
    for run, cfg in zip(runs[1:], configs[1:]):
        if cfg.classes != first.classes:
            raise ConfigError(f"{run}: classes {cfg.classes} differ from {runs[0]}'s {first.classes}; "
                              "ensemble members must predict the same classes in the same order")
        a, b = asdict(first.preprocessing), asdict(cfg.preprocessing)  # every field, to_dict omits some
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            raise ConfigError(f"{run}: preprocessing differs from {runs[0]}'s in {', '.join(diff)} "
                              f"({', '.join(f'{b[k]} vs {a[k]}' for k in diff)}); ensemble members "
                              "must share size, channels, resize, mean, std and JPEG draft")


def build_ensemble(runs: list[str | Path], out: str | Path, *, force: bool = False,
                   reporter: Reporter = QUIET) -> Path:
    """Write the average of the model folders ``runs`` as one model folder ``out``.

    >>> build_ensemble(["runs/cv/fold-1", "runs/cv/fold-2"], "runs/cv/ensemble")  # doctest: +SKIP
    """
    runs = [str(r) for r in runs]
    if len(runs) < 2:
        raise ConfigError("an ensemble needs at least two model folders")
    out = Path(out)
    if str(out) in runs:
        raise ConfigError(f"{out}: the output folder cannot be one of the members")
    check_output_folder(out, force)
    configs = [read_config(r) for r in runs]
    _check_compatible(configs, runs)
    members, nets = [], []
    for run, cfg in zip(runs, configs):
        net = build_model(cfg)
        load_weights(run, net, cfg)
        nets.append(net)
        members.append({"architecture": cfg.architecture, "architecture_kwargs": cfg.architecture_kwargs,
                        "temperature": cfg.temperature})
    first = configs[0]
    binary = first.num_outputs == 1
    model = EnsembleNet(nets, [m["temperature"] for m in members], binary)
    thresholds = {c.threshold for c in configs}
    threshold = first.threshold if len(thresholds) == 1 else 0.5
    if len(thresholds) > 1:
        reporter.warn(f"members' thresholds differ ({sorted(thresholds)}); the ensemble uses 0.5 "
                      "(choose one on validation data with 'imageclf calibrate')")
    carves = {carve_of(c.recipe) for c in configs if "val" not in c.data.get("split_sizes", {})}
    if len(carves) > 1:
        reporter.warn(f"members carved validation data differently (val_fraction, seed: {sorted(carves)}): "
                      "on data without a val split of its own, one member's validation images are "
                      "another's training images; give members one --set split_seed=N")
    tta: list[str] = []
    for c in configs:
        tta += [t for t in c.tta if t not in tta]
    config = ModelConfig(
        architecture="ensemble", architecture_kwargs={"members": members}, classes=list(first.classes),
        preprocessing=first.preprocessing, threshold=threshold, tta=tta,
        name=f"ensemble of {len(runs)}: " + ", ".join(c.name or "?" for c in configs),
        recipe=dict(first.recipe), data=dict(first.data),
        members=[{"source": r, "name": c.name, "architecture": c.architecture,
                  "weights_sha256": c.weights_sha256, "metrics": c.metrics}
                 for r, c in zip(runs, configs)],
    )
    ood = combine_members([read_ood(r, c.ood) for r, c in zip(runs, configs)])
    out.mkdir(parents=True, exist_ok=True)
    if ood is not None:
        config.ood = save_ood(out, ood)
    else:
        (out / OOD_FILE).unlink(missing_ok=True)
        reporter.warn("a member has no out-of-distribution statistics: the ensemble has none either")
    save_model(out, model, config)
    write_card(out, config)
    reporter.print(f"ensemble of {len(runs)} models written to {out}")
    return out
