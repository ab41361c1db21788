"""Building blocks of a self-contained HTML page: inline CSS, tables, base64-embedded PNGs.

Nothing on a page refers to anything outside it (no scripts, fonts or links), so a
report opens the same offline, from an e-mail attachment or from an archive.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:0 24px 48px;color:#222;line-height:1.45}
h1{border-bottom:3px solid #0072B2;padding:18px 0 8px;margin-bottom:4px}
h2{border-bottom:1px solid #ccc;margin-top:36px;padding-bottom:4px;color:#0b3d66}
nav{font-size:13px;margin:8px 0 0}nav a{margin-right:12px;color:#0072B2;text-decoration:none}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f2f5f9}td.l,th.l{text-align:left}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;border-radius:4px}
.note{color:#555;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:6px 0}
pre{background:#f7f7f7;border:1px solid #e4e4e4;padding:10px;overflow-x:auto;font-size:12px}
.kpi{display:inline-block;margin:6px 18px 6px 0}.kpi b{font-size:22px;display:block;color:#0b3d66}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(x, digits: int = 4) -> str:
    """A number for a table cell; missing or undefined values show as a dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "&ndash;"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return esc(x)


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(headers: Sequence[str], rows: Iterable[Sequence], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text, cells already formatted."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    return table(["field", "value"], ([esc(k), f"<code>{esc(v)}</code>"] for k, v in pairs), left=2)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def document(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole page: ``sections`` are (anchor, title, body HTML), linked from a contents bar."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    parts = "\n".join(section(a, t, b) for a, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><div class=\"note\">{subtitle}</div><nav>{nav}</nav>\n{parts}\n"
            f"</body></html>\n")
