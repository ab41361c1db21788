"""The label review page: the most suspect images with their thumbnails, given and suggested
labels and scores, as one self-contained HTML file (``imageclf review``)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from imageclf.evaluation.report.page import document, esc, fmt, table

THUMB = 96  # thumbnail side in pixels


def thumbnail(pixels: np.ndarray, side: int = THUMB) -> str:
    """A uint8 (H, W[, C]) image as an inline PNG ``<img>``, at most ``side`` pixels a side."""
    arr = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    img = Image.fromarray(np.ascontiguousarray(arr))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    scale = max(1, side // max(img.size))
    return (f'<img alt="thumbnail" style="width:{img.size[0] * scale}px;image-rendering:pixelated;'
            f'margin:0" src="data:image/png;base64,{data}">')


def review_html(rows: list[dict], images: np.ndarray, classes: list[str], method: str, source: str,
                total: int, issues: int) -> str:
    """The page for ``rows`` (most suspect first) and their decoded ``images``."""
    body = [[str(r["rank"]), thumbnail(img), esc(r["path"]), esc(r["given"]),
             ("<b>" + esc(r["suggested"]) + "</b>") if r["suggested"] != r["given"] else esc(r["suggested"]),
             fmt(r["score"]), fmt(r[f"p_{r['suggested']}"]), "yes" if r["issue"] else "", str(r["fold"])]
            for r, img in zip(rows, images)]
    intro = (f"<p>{total:,} training images of <code>{esc(source)}</code> scored by models that did not "
             f"train on them (out-of-fold), ranked by how likely their given label is wrong: lowest "
             f"label-quality score first. <b>{issues:,}</b> are flagged as label issues ({esc(method)}). "
             f"The {len(rows):,} most suspect are shown; <code>review.csv</code> lists all, and "
             "<code>imageclf train DATA --exclude review.csv</code> leaves out the rows whose "
             "<code>exclude</code> column is true (edit it to keep or drop others).</p>")
    headers = ["rank", "image", "file", "given label", "suggested label", "score", "p(suggested)",
               "issue", "fold"]
    return document("Label review", f"{esc(source)}: classes {esc(', '.join(classes))}",
                    [("ranked", "Most suspect labels", intro + table(headers, body, left=5))])
