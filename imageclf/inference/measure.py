"""``imageclf export RUN``: the graph files and the measurement that ``--backend auto`` reads.

:func:`export_run` writes ``RUN/model.onnx``; with ``int8`` also ``RUN/model.int8.onnx``,
calibrated on the model's validation images (:mod:`imageclf.modelfile.quantize`), its fp32
and int8 accuracy, ROC-AUC and speed on those images stored in its metadata; then it measures
every installed backend on the same images (images per second, agreement with torch) into
``RUN/backends.json`` (:mod:`imageclf.inference.auto`). Where an int8 backend measures unequal,
the int8 graph is made once more with the network's last convolution and what follows it in
float32, and kept if more int8 backends measure equal with it.

The validation images are the split the model was judged on in training: those of the data
its config.json records (``data.source``, the carve made again with the recipe's seed), or of
``calibration`` when given; at most :data:`MAX_IMAGES` of them, a seeded sample.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.decision import decide
from imageclf.core.errors import ConfigError, DataError
from imageclf.core.io import atomic_write_bytes, atomic_write_text, check_output_file
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import cache_split
from imageclf.data.sources import evaluation_split
from imageclf.evaluation.evaluate import open_for_model
from imageclf.evaluation.metrics import roc_auc
from imageclf.inference.auto import BACKENDS_FILE, TOLERANCE, agrees, config_digest, pick
from imageclf.inference.backends import BACKENDS, load_backend, load_graph, runtime_installed
from imageclf.inference.onnx_predictor import OnnxPredictor
from imageclf.inference.torch_predictor import TorchPredictor
from imageclf.modelfile.onnx import onnx_bytes
from imageclf.modelfile.onnx_meta import INT8_FILE, ONNX_FILE, OPSET
from imageclf.modelfile.quantize import can_keep_tail, quantize_graph, with_quantization_info

MAX_IMAGES = 1024  # validation images measured: one image is 0.1 point of accuracy (0.5 is the bar)
# Calibrated on the first of them: a few hundred suffice (256 and 512 gave the same int8 graph
# accuracy on mnist-basic, as did Percentile and Entropy calibration against MinMax).
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32


@dataclass
class Validation:
    """The model's validation images (uint8 NHWC), their labels as model class indices, and where from."""

    images: np.ndarray
    labels: np.ndarray
    source: str


def validation_images(model: TorchPredictor, data: str | Path | None = None, limit: int = MAX_IMAGES,
                      seed: int = 0) -> Validation:
    """The validation split of ``data`` (default: the data config.json records), decoded."""
    source = data or model.config.data.get("source")
    if not source or not Path(source).exists():
        raise DataError(f"{model.source}: the data it trained on ({source or 'not recorded'}) is not here; "
                        "give its validation images with --calibration DATA")
    ds = open_for_model(model, source)
    split = evaluation_split(ds, "val", model.config.recipe)
    unknown = sorted(set(ds.classes) - set(model.classes))
    if unknown:
        raise DataError(f"{ds.source}: classes {unknown} are not among the model's {model.classes}")
    if len(split) > limit:
        split = split.subset(np.sort(np.random.default_rng(seed).choice(len(split), limit, replace=False)))
    cached = cache_split(split, model.preprocessing, storage="memory")
    remap = np.array([model.classes.index(c) for c in ds.classes])
    return Validation(np.asarray(cached.images), remap[cached.labels], f"{source}, validation split")


def _figures(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    return {"accuracy": float(np.mean(decide(probs, threshold) == labels)),
            "auc": float(roc_auc(labels, probs))}


def _interleaved_speeds(models: dict[str, Any], images: np.ndarray, rounds: int = 3,
                        ood: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each model's probabilities and images per second, best of ``rounds``, the models taking
    turns in every round: on a shared machine a burst of load then slows them all, not one.
    ``ood``, when given, receives each model's OOD scores (None for a model without them)."""
    probs, best = {}, dict.fromkeys(models, float("inf"))
    for model in models.values():
        model.predict_scored(images[:8])  # warm-up: first-call allocations, graph compilation
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            probs[name], scores = model.predict_scored(images)
            best[name] = min(best[name], time.perf_counter() - t0)
            if ood is not None:
                ood[name] = scores
    return probs, {name: len(images) / s for name, s in best.items()}


def _start_seconds(run_dir: Path, name: str, image: np.ndarray) -> float:
    """Seconds to load backend ``name`` afresh and answer one image (its graph compiled for the
    CPU, its first run; the runtime already imported): what ``auto`` weighs for a short job."""
    runtime, _, variant = name.partition("-")
    t0 = time.perf_counter()
    load_graph(run_dir, runtime, variant or "fp32").predict_scored(image)
    return time.perf_counter() - t0


def _same_ood_answers(scores: np.ndarray | None, reference: np.ndarray | None,
                      threshold: float | None) -> float:
    """The share of images on the same side of the OOD threshold as torch's (1.0 without a score).
    Scores within 1e-4 of the threshold count as either side: the threshold is itself one of
    the validation images' scores, which float rounding puts on one side or the other."""
    if scores is None or reference is None or threshold is None or not len(reference):
        return 1.0
    near = np.abs(np.asarray(scores) - threshold) <= 1e-4 * max(abs(threshold), 1.0)
    return float(np.mean(((scores > threshold) == (reference > threshold)) | near))


def quantize_run(model: TorchPredictor, run_dir: Path, fp32: bytes, val: Validation,
                 force: bool = False, reporter: Reporter = QUIET, fp32_tail: bool = False) -> dict[str, Any]:
    """Write RUN/model.int8.onnx calibrated on ``val`` (``fp32_tail``: see
    :func:`~imageclf.modelfile.quantize.quantize_graph`); returns fp32 against int8 figures."""
    path = run_dir / INT8_FILE
    check_output_file(path, force)
    fp32_model = OnnxPredictor(fp32, model.config, str(run_dir), str(run_dir))
    calib = [fp32_model.to_input(val.images[i:i + CALIBRATION_BATCH])
             for i in range(0, min(len(val.images), CALIBRATION_IMAGES), CALIBRATION_BATCH)]
    int8 = quantize_graph(fp32, calib, info={"calibration_source": val.source}, fp32_tail=fp32_tail)
    int8_model = OnnxPredictor(int8, model.config, str(run_dir), str(run_dir), variant="int8")
    probs, speeds = _interleaved_speeds({"fp32": fp32_model, "int8": int8_model}, val.images)
    (p32, s32), (p8, s8) = (probs["fp32"], speeds["fp32"]), (probs["int8"], speeds["int8"])
    f32, f8 = _figures(p32, val.labels, model.threshold), _figures(p8, val.labels, model.threshold)
    figures = {"images": len(val.images), "fp32": {**f32, "img_per_s": s32}, "int8": {**f8, "img_per_s": s8},
               "accuracy_change": f8["accuracy"] - f32["accuracy"], "auc_change": f8["auc"] - f32["auc"],
               "speedup": s8 / s32, "same_decisions": float(np.mean(decide(p8, model.threshold)
                                                                  == decide(p32, model.threshold))),
               "measured_on": f"onnxruntime, {os.cpu_count()} cpus"}
    atomic_write_bytes(path, with_quantization_info(int8, {"figures": figures}))
    reporter.print(int8_summary(figures))
    return figures


def int8_summary(figures: dict[str, Any]) -> str:
    """One line: fp32 against int8 accuracy, ROC-AUC and speed."""
    a, b = figures["fp32"], figures["int8"]
    return (f"int8 on {figures['images']} validation images: "
            f"accuracy {a['accuracy']:.4f} -> {b['accuracy']:.4f} "
            f"({figures['accuracy_change'] * 100:+.2f} pt), ROC-AUC {a['auc']:.4f} -> {b['auc']:.4f} "
            f"({figures['auc_change']:+.4f}), {a['img_per_s']:.0f} -> {b['img_per_s']:.0f} img/s "
            f"({figures['speedup']:.2f}x), same decisions {figures['same_decisions']:.1%}")


def measure_backends(model: TorchPredictor, run_dir: Path, val: Validation,
                     reporter: Reporter = QUIET) -> dict[str, Any]:
    """Each installed backend's speed and agreement with torch (``model``, RUN's PyTorch
    predictor) on ``val``: RUN/backends.json. The graphs are loaded without the refusal of an
    int8 backend an earlier measurement found unequal: this is what measures it again."""
    models: dict[str, Any] = {"torch": model}
    for name in BACKENDS:
        runtime, _, variant = name.partition("-")
        if name in ("torch", "auto") or not runtime_installed(runtime):
            continue
        if variant == "int8" and not (run_dir / INT8_FILE).is_file():
            continue
        models[name] = load_graph(run_dir, runtime, variant or "fp32")
    scores: dict[str, Any] = {}
    probs, speeds = _interleaved_speeds(models, val.images, ood=scores)
    starts = {name: _start_seconds(run_dir, name, val.images[:1]) for name in models if name != "torch"}
    threshold = models["torch"].threshold
    ref_probs = probs["torch"]
    ref = _figures(ref_probs, val.labels, threshold)
    results: dict[str, Any] = {"torch": {"variant": "fp32", "img_per_s": speeds["torch"], **ref}}
    for name in models:
        if name == "torch":
            continue
        got = _figures(probs[name], val.labels, threshold)
        entry = {"variant": name.partition("-")[2] or "fp32", "img_per_s": speeds[name],
                 "load_s": starts[name], **got,
                 "max_abs_diff": float(np.abs(probs[name] - ref_probs).max()) if len(ref_probs) else 0.0,
                 "same_decisions": float(np.mean(decide(probs[name], threshold)
                                                 == decide(ref_probs, threshold))),
                 "accuracy_drop": ref["accuracy"] - got["accuracy"], "auc_drop": ref["auc"] - got["auc"],
                 "same_ood_answers": _same_ood_answers(scores[name], scores["torch"],
                                                       models["torch"].ood_threshold)}
        entry["agrees"] = agrees(entry)
        results[name] = entry
    d = {"config_sha256": config_digest(models["torch"].config), "images": len(val.images),
         "source": val.source, "tolerance": TOLERANCE, "backends": results,
         "auto": pick(results, list(results)), "cpus": os.cpu_count(),
         "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
         "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_measurement(run_dir, d)
    for line in backend_lines(d):
        reporter.print(line)
    return d


def _write_measurement(run_dir: Path, measured: dict[str, Any]) -> None:
    atomic_write_text(run_dir / BACKENDS_FILE, json.dumps(measured, indent=2) + "\n")


def _equal_int8(measured: dict[str, Any]) -> tuple[int, int]:
    """(int8 backends measured equal to torch, int8 backends measured)."""
    int8 = [e for e in measured["backends"].values() if e.get("variant") == "int8"]
    return sum(bool(e.get("agrees")) for e in int8), len(int8)


def _quantize_again_with_fp32_tail(model: TorchPredictor, run_dir: Path, fp32: bytes, val: Validation,
                                   first: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    """Where an int8 backend was measured unequal to torch: the int8 graph made again with the
    network's last convolution and the layers after it in float32 (the features the OOD score
    reads; :func:`~imageclf.modelfile.quantize.tail_nodes`), and measured again. Kept where
    more int8 backends measure equal with it (``{"int8": figures, "backends": measurement}``);
    else the first graph and its measurement are written back (``{}``)."""
    before = (run_dir / INT8_FILE).read_bytes()
    reporter.print("int8 measured unequal to torch: quantising again with the last convolution and "
                   "the layers after it in float32")
    figures = quantize_run(model, run_dir, fp32, val, force=True, reporter=reporter, fp32_tail=True)
    measured = measure_backends(model, run_dir, val, reporter)
    if _equal_int8(measured)[0] > _equal_int8(first)[0]:
        return {"int8": figures, "backends": measured}
    atomic_write_bytes(run_dir / INT8_FILE, before)
    _write_measurement(run_dir, first)
    reporter.print("kept the first int8 graph: the second measured no better")
    return {}


def backend_lines(measured: dict[str, Any]) -> list[str]:
    """The measurement as a small table (what ``imageclf export`` prints)."""
    lines = [f"backends on {measured['images']} validation images ({measured['source']}):"]
    for name, e in measured["backends"].items():
        agreement = ("reference" if name == "torch" else
                     f"max |dp| {e['max_abs_diff']:.1e}, same decisions {e['same_decisions']:.1%}")
        mark = "" if name == "torch" or e.get("agrees") else "  (not equal: auto skips it)"
        start = f"  starts in {e['load_s']:.2f} s" if "load_s" in e else ""
        lines.append(f"  {name:<14} {e['img_per_s']:>8.0f} img/s{start}  accuracy {e['accuracy']:.4f}  "
                     f"ROC-AUC {e['auc']:.4f}  {agreement}{mark}")
    one = pick(measured["backends"], list(measured["backends"]), images=1)
    lines.append(f"--backend auto: {measured['auto']}" + (f" ({one} for `imageclf predict` of a few images)"
                                                          if one != measured["auto"] else ""))
    return lines


def export_run(run_dir: str | Path, onnx_path: str | Path | None = None, *, int8: bool = False,
               calibration: str | Path | None = None, measure: bool = True, force: bool = False,
               opset: int = OPSET, reporter: Reporter = QUIET) -> dict[str, Any]:
    """Export a model folder for the graph backends and measure them (see the module docstring).

    Returns ``{"onnx": path, "int8": figures or None, "backends": measurement or None}``. Without
    validation data (config.json's ``data.source`` absent here and no ``calibration``) ``int8``
    is refused and the measurement skipped with a warning.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: export --int8 and the measurement need a model folder")
    model = TorchPredictor.load(run_dir, device="cpu")
    fp32 = onnx_bytes(model, opset)
    target = Path(onnx_path) if onnx_path else run_dir / ONNX_FILE
    atomic_write_bytes(target, fp32)
    out: dict[str, Any] = {"onnx": target, "int8": None, "backends": None}
    if not (int8 or measure):
        return out
    if int8:
        check_output_file(run_dir / INT8_FILE, force)  # before decoding anything
    try:
        val = validation_images(model, calibration)
    except DataError as exc:
        if int8:
            raise
        reporter.warn(f"no backend measurement ({exc}); --backend auto stays torch")
        return out
    if int8:
        out["int8"] = quantize_run(model, run_dir, fp32, val, force, reporter)
    if measure and target == run_dir / ONNX_FILE:
        out["backends"] = measure_backends(model, run_dir, val, reporter)
        equal, measured = _equal_int8(out["backends"])
        if int8 and equal < measured and can_keep_tail(fp32):
            out.update(_quantize_again_with_fp32_tail(model, run_dir, fp32, val, out["backends"], reporter))
    return out


def evaluate_backend(run: str | Path, backend: str, data: Any, *, device: str = "auto",
                     **kwargs: Any) -> tuple[Any, str | None]:
    """Evaluate RUN on ``backend`` (``kwargs`` as :meth:`Classifier.evaluate` takes them) and, on
    any backend but torch, torch too on the same images: ``(result, line)``, the line saying
    how accuracy and ROC-AUC change against fp32 PyTorch and how much faster the forward pass
    was (None on torch). What ``imageclf evaluate RUN DATA --backend B`` prints."""
    model = load_backend(run, backend, device=device)
    t0 = time.perf_counter()
    result = model.evaluate(data, **kwargs)
    took = time.perf_counter() - t0
    if model.backend == "torch":
        return result, None
    quiet = {**kwargs, "reporter": QUIET, "keep_images": False, "groups": None}
    t0 = time.perf_counter()
    reference = load_backend(run, "torch", device=device).evaluate(data, **quiet)
    ref_took = time.perf_counter() - t0
    return result, change_line(result.metrics, reference.metrics, model.backend, ref_took / max(took, 1e-9))


def change_line(got: dict[str, Any], ref: dict[str, Any], backend: str, speedup: float | None = None) -> str:
    """``backend against torch (fp32) on N images: accuracy a -> b (+x pt), ROC-AUC ...``."""
    acc, auc = got["accuracy"] - ref["accuracy"], got["roc_auc"] - ref["roc_auc"]
    speed = f"; evaluation {speedup:.2f}x as fast (decoding included)" if speedup else ""
    return (f"{backend} against torch (fp32) on these {got['n']} images: accuracy {ref['accuracy']:.4f} -> "
            f"{got['accuracy']:.4f} ({acc * 100:+.2f} pt), ROC-AUC {ref['roc_auc']:.4f} -> "
            f"{got['roc_auc']:.4f} ({auc:+.4f}){speed}")
