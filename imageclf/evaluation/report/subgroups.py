"""Figures per subgroup: ``imageclf evaluate RUN DATA --groups meta.csv``.

``meta.csv`` has a path column (named as a dataset CSV's: ``path``, ``file``, ``filename``,
``image``, ...; paths relative to its folder, or an npz item's name such as ``test[3]``) and
any other columns (site, sex, age band). For each value of each column, the evaluated
images with that value get accuracy, ROC-AUC and sensitivity / specificity (two classes;
macro recall and macro F1 with more) with percentile-bootstrap 95 % intervals
(:func:`~imageclf.evaluation.report.stats.bootstrap_ci`). A subgroup whose interval lies
wholly below the figure on all evaluated images is marked: the model is worse there,
beyond what chance in a group that small explains. Columns named like labels or splits
(``label``, ``class``, ``split``, ...) are not subgroups.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageclf.core.errors import DataError
from imageclf.data.dataset import Dataset, item_key
from imageclf.data.tables import LABEL_COLUMNS, PATH_COLUMNS, SPLIT_COLUMNS, Table, resolve_listed
from imageclf.evaluation.report import stats


@dataclass
class Subgroups:
    """Each evaluated image's value in every column of a groups table (None: no value)."""

    source: str
    columns: dict[str, list[str | None]]
    missing: int  # evaluated images the table has no row for


def read_subgroups(path: str | Path, ds: Dataset, names: list[str]) -> Subgroups:
    """The groups table at ``path`` for the evaluated images ``names`` of ``ds``.

    A row naming no image of ``ds`` (in any split) is an error: a typo or another data set.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (--groups takes a CSV of image paths and group columns)")
    table = Table(path)
    pcol = table.column(PATH_COLUMNS, None, "path", "a path column")
    skip = {pcol, *LABEL_COLUMNS, *SPLIT_COLUMNS}
    columns = [c for c in table.fields if c not in skip]
    if not columns:
        raise DataError(f"{path}: no group columns besides {table.header_name(pcol)!r} (e.g. site, sex, age)")
    known = {item_key(n) for s in ds.splits.values() for n in s.item_names()}
    by_key: dict[str, dict[str, str]] = {}
    unknown = []
    for lineno, row in enumerate(table.rows, start=2):
        if not row[pcol]:
            continue
        key = resolve_listed(path.parent, row[pcol])
        if key not in known:
            unknown.append((lineno, row[pcol]))
        by_key[key] = row
    if unknown:
        lineno, name = unknown[0]
        raise DataError(f"{path}: {len(unknown)} of its paths are not images of {ds.source} (first: "
                        f"{name!r}, line {lineno})")
    rows = [by_key.get(item_key(n)) for n in names]
    values = {table.header_name(c): [(r[c] or None) if r is not None else None for r in rows]
              for c in columns}
    return Subgroups(str(path), values, sum(r is None for r in rows))


def subgroup_figures(labels: np.ndarray, probs: np.ndarray, threshold: float, groups: Subgroups, *,
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Per column and value: images, class counts, each figure with its interval, and which
    figures' intervals lie wholly below the overall figure (``below``)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, np.float64)
    k = probs.shape[1]
    statistics = stats.default_statistics(k, threshold)
    overall = {name: float(fn(labels, probs)) for name, fn in statistics.items()}
    out: dict = {"source": groups.source, "missing": groups.missing, "level": level,
                 "n_resamples": n_resamples, "seed": seed, "overall": overall, "columns": {}}
    for column, values in groups.columns.items():
        entries = []
        present = sorted({v for v in values if v is not None})
        for value in present:
            idx = np.flatnonzero(np.array([v == value for v in values], bool))
            ci = stats.bootstrap_ci(labels[idx], probs[idx], statistics, n_resamples=n_resamples, seed=seed,
                                    level=level)["metrics"]
            below = [name for name, c in ci.items()
                     if np.isfinite(c["high"]) and np.isfinite(overall[name]) and c["high"] < overall[name]]
            entries.append({"value": value, "n": int(len(idx)),
                            "class_counts": np.bincount(labels[idx], minlength=k).tolist(),
                            "metrics": ci, "below": below})
        out["columns"][column] = entries
    return out


def subgroup_lines(fig: dict) -> list[str]:
    """The subgroup figures as text: ``estimate [low, high]`` per figure, ``*`` where the
    interval lies wholly below the overall figure."""
    names = list(fig["overall"])
    head = f"{'':<14}{'n':>6}  " + "".join(f"{n.replace('_', ' '):<22}" for n in names)
    lines = [f"subgroups ({fig['source']}; {fig['level']:.0%} bootstrap intervals, {fig['n_resamples']} "
             "resamples; * = interval wholly below the overall figure)", head,
             f"{'all':<14}{'':>6}  " + "".join(f"{_num(fig['overall'][n]):<22}" for n in names)]
    for column, entries in fig["columns"].items():
        lines.append(f"{column}:")
        for e in entries:
            cells = []
            for n in names:
                m = e["metrics"][n]
                mark = "*" if n in e["below"] else " "
                text = f"{_num(m['estimate'])} [{_num(m['low'], 2)}, {_num(m['high'], 2)}]{mark}"
                cells.append(text.ljust(22))
            lines.append(f"  {str(e['value'])[:12]:<12}{e['n']:>6}  " + "".join(cells))
    if fig["missing"]:
        lines.append(f"{fig['missing']} evaluated images have no row in {fig['source']}")
    return lines


def _num(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"
