"""Time ``imageclf.load(RUN).predict(paths)`` in a fresh process; print one JSON line.

usage: python -m bench.predict_probe RUN FOLDER [--backend B] [--batch-size N]

FOLDER holds one subfolder per class (the test split); the probe scores the predictions
against those folder names (the classes answered, as Keras' accuracy is; ``refused`` is the
share the OOD score would answer "outside" in the default mode). Decoding is included, as it
is in Keras' predict on a flow_from_directory generator; loading the model is timed apart. ``--backend`` is
``imageclf predict``'s (torch, onnx, openvino, onnx-int8, openvino-int8, auto); the JSON line
says whether torch was imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("folder")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--batch-size", type=int, default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    from imageclf.core.runtime import configure_process

    # As `imageclf predict` does before torch loads: on a busy machine libgomp's default
    # spinning wait makes the torch backend's first pass several times slower.
    configure_process()
    from imageclf.inference.backends import load_backend
    from imageclf.inference.predictions import expand_inputs

    model = load_backend(a.run, a.backend, device="cpu")
    load_s = time.perf_counter() - t0
    paths = expand_inputs([a.folder])
    kw = {"batch_size": a.batch_size} if a.batch_size else {}
    t1 = time.perf_counter()
    # Flagged, not refused: the accuracy is of the classes the network answers, as Keras' is;
    # the share the OOD score would refuse is reported beside it.
    preds = model.predict(paths, ood_mode="flag", **kw)
    seconds = time.perf_counter() - t1
    truth = [Path(p).parent.name for p in preds.paths]
    accuracy = sum(t == p for t, p in zip(truth, preds.labels)) / max(1, len(truth))
    refused = float(preds.outside.mean()) if preds.ood_scores is not None and len(truth) else None
    print(json.dumps({"images": len(paths), "seconds": round(seconds, 3),
                      "img_per_s": round(len(paths) / seconds, 1), "accuracy": round(accuracy, 4),
                      "refused": None if refused is None else round(refused, 4),
                      "load_s": round(load_s, 2), "backend": model.backend,
                      "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    main()
