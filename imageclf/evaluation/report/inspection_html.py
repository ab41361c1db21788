"""The dataset inspection page: one self-contained HTML file drawn from an InspectionResult."""

from __future__ import annotations

from pathlib import Path

from imageclf.evaluation.report import plots
from imageclf.evaluation.report.page import document, esc, image, table


def _counts(d: dict, classes: list[str]) -> str:
    counts = {s: v["class_counts"] for s, v in d["splits"].items()}
    rows = [[esc(s), *(str(v["class_counts"][c]) for c in classes), str(v["images"]),
             str(len(v["unreadable"]))] for s, v in d["splits"].items()]
    return (table(["split", *classes, "total", "unreadable"], rows)
            + image(plots.class_counts_plot(counts, classes), "class counts"))


def _sizes(d: dict) -> str:
    rows = []
    for s, v in d["splits"].items():
        sizes = v["sizes"]
        ws = [w for w, _, _ in sizes] or [0]
        hs = [h for _, h, _ in sizes] or [0]
        mean = v["mean_size"] or [0, 0]
        rows.append([esc(s), str(len(sizes)), f"{min(ws)} x {min(hs)}", f"{max(ws)} x {max(hs)}",
                     f"{mean[0]:.0f} x {mean[1]:.0f}",
                     esc(", ".join(f"{m} {n}" for m, n in v["modes"].items())),
                     esc(", ".join(f"{b}-bit {n}" for b, n in v["bit_depths"].items()))])
    return (table(["split", "distinct sizes", "smallest (w x h)", "largest", "mean", "modes",
                   "bits per pixel"], rows)
            + image(plots.size_scatter({s: v["sizes"] for s, v in d["splits"].items()}), "image sizes"))


def _unreadable(d: dict) -> str:
    rows = [[esc(s), esc(p), esc(why)] for s, v in d["splits"].items() for p, why in v["unreadable"]]
    if not rows:
        return "<p>Every file decoded.</p>"
    return f"<p>{len(rows)} files cannot be read; training needs --skip-bad to leave them out.</p>" + \
        table(["split", "file", "reason"], rows[:500], left=3)


def _duplicates(result, d: dict) -> str:
    dup = d["duplicates"]
    rows = []
    for key in sorted(set(dup["exact_counts"]) | set(dup["near_counts"])):
        a, _, b = key.partition("/")
        where = f"within {a}" if a == b else f"{a} and {b}"
        near = dup["near_counts"].get(key)
        rows.append([esc(where), str(dup["exact_counts"].get(key, 0)),
                     "&ndash;" if near is None else str(near)])
    out = (f"<p>Identical: {esc(dup['method']['exact'])}. Near-duplicate: {esc(dup['method']['near'])}.</p>"
           + table(["where", "identical pairs", "near-duplicate pairs"], rows))
    def total(same: bool) -> int:
        return sum(n for counts in (dup["exact_counts"], dup["near_counts"]) for k, n in counts.items()
                   if (k.split("/")[0] == k.split("/")[1]) == same)

    if total(False):
        out += (f'<p class="warn">{total(False)} pairs of images are shared between splits: figures on '
                "the held-out split are optimistic. Remove each copy from one side.</p>")
    if total(True):
        out += (f'<p class="warn">{total(True)} pairs of copies within a split: if training carves its '
                "validation images from that split, a copy can land on both sides.</p>")
    for key, pairs in result.pair_images.items():
        imgs, titles = [], []
        for name_a, img_a, name_b, img_b, _ in pairs:
            imgs += [img_a, img_b]
            titles += [_short(Path(name_a).name, 24), f"~ {_short(Path(name_b).name, 22)}"]
        out += (f"<h3>Examples: {esc(key)}</h3>"
                + table(["image", "its copy", "kind"],
                        ([esc(a), esc(b), esc(note)] for a, _, b, _, note in pairs), left=3)
                + image(plots.image_grid(imgs, titles, cols=4, cell=2.2), f"duplicate examples {key}"))
    return out


def _short(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else "..." + name[-limit + 3:]


def _samples(result) -> str:
    out = ""
    for cls, items in result.samples.items():
        if not items:
            continue
        imgs = [img for _, _, img in items]
        titles = [_short(result.splits[s].names[i], 26) for s, i, _ in items]
        out += f"<h3>{esc(cls)}</h3>" + image(plots.image_grid(imgs, titles, cols=8, cell=1.7),
                                              f"samples of {cls}")
    return out


def _augmented(result) -> str:
    if not result.augmented:
        return "<p>No readable training image to augment.</p>"
    settings = {k: v for k, v in result.augment_settings.items() if v not in (0, 0.0, False, None)}
    imgs, titles = [], []
    for name, original, draws in result.augmented:
        imgs += [original, *draws]
        titles += [f"original\n{_short(name, 30)}", *(f"augmented #{i + 1}" for i in range(len(draws)))]
    cols = 1 + len(result.augmented[0][2])
    return (f"<p>Recipe <b>{esc(result.recipe)}</b>, its preprocessing and augmentation "
            f"(<code>{esc(settings) if settings else 'none'}</code>), applied by the training code "
            "(imageclf.data.transforms.augment) to the decoded cache; each row is one image.</p>"
            + image(plots.image_grid(imgs, titles, cols=cols, cell=2.3), "augmented samples"))


def _groups(d: dict) -> str:
    g = d.get("groups")
    if not g:
        return ("<p>No --group-by given, and the file names show no shared prefixes. If several images "
                "come from one patient or subject, name the groups with --group-by so that splits keep "
                "each one on one side.</p>")
    if g["group_by"] is None:
        h = g["looks_grouped"]
        return (f'<p class="warn">File names look grouped: {h["files"]:,} of {h["of"]:,} files share a '
                f'prefix with another ({h["prefixes"]:,} prefixes, e.g. {esc(", ".join(h["examples"]))}). '
                f"If each prefix is one patient or subject, keep them on one side of every split: "
                f"<code>--group-by '{esc(h['suggest'])}'</code>.</p>")
    out = (f"<p>Groups from <code>--group-by {esc(g['group_by'])}</code>: "
           + esc(", ".join(f"{n} {c}" for n, c in g["per_split"].items())) + ".</p>")
    rows = [[esc(k.replace("/", " and ")), str(v["count"]), esc(", ".join(v["examples"]))]
            for k, v in g["crossing"].items()]
    if rows:
        out += table(["splits", "groups in both", "examples"], rows, left=1)
    if any(v["count"] for v in g["crossing"].values()):
        out += ('<p class="warn">Some groups cross splits: the held-out split has images of patients '
                "the training split has seen, so its figures are optimistic.</p>")
    return out


def inspection_html(result) -> str:
    d = result.to_dict()
    sections = [("layout", "Layout", f"<p>{esc(d.get('layout') or result.kind)}</p>"),
                ("counts", "Class counts", _counts(d, result.classes)),
                ("sizes", "Image sizes, modes and bit depths", _sizes(d)),
                ("unreadable", "Unreadable files", _unreadable(d)),
                ("duplicates", "Duplicates and leakage between splits", _duplicates(result, d)),
                ("groups", "Groups (patients, subjects) across splits", _groups(d)),
                ("samples", "Sample images per class", _samples(result)),
                ("augmented", "Augmented training samples", _augmented(result))]
    subtitle = (f"{esc(result.source)} ({esc(result.kind)}), classes {esc(', '.join(result.classes))}. "
                "The same figures are in the JSON written by <code>imageclf inspect --json</code>.")
    return document(f"Dataset inspection: {result.source}", subtitle, sections)
