"""Figures (seaborn/matplotlib, PNG + SVG) built from the result store only.

- ``aji_distribution_<dataset>.png``: per-test-unit AJI of every method, one panel per ratio (box + strip).
- ``sweep_<option>.png``: the α and d sweeps (the paper's Figs. 3/4), and any other swept option.
- ``qualitative_<dataset>_<ratio>.png``: like the paper's Fig. 2: image, ground truth and each method's
  prediction as coloured contours on the same test patches (saved by the runner in ``examples.npz``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.reports.collect import RATIO_ORDER, Result, method_sort_key
from benchmark.store import CellRecord


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    fig.savefig(out[0], dpi=120, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    _plt().close(fig)
    return out


def aji_distributions(results: Sequence[Result], out: Path) -> list[Path]:
    """Box + strip plots of per-unit AJI per method, one figure per dataset."""
    import seaborn as sns

    plt = _plt()
    written: list[Path] = []
    done = [r for r in results if r.status == "done" and not r.variant and r.per_image is not None]
    for ds in sorted({r.dataset for r in done}):
        rows = []
        for r in done:
            if r.dataset == ds:
                rows += [{"method": r.method, "ratio": r.ratio, "AJI": v} for v in r.per_image.to_numpy()]
        df = pd.DataFrame(rows)
        ratios = [x for x in RATIO_ORDER if x in set(df.ratio)] + sorted(set(df.ratio) - set(RATIO_ORDER))
        order = sorted(set(df.method), key=method_sort_key)
        fig, axes = plt.subplots(1, len(ratios), figsize=(3.2 + 1.1 * len(order) * len(ratios), 3.6),
                                 squeeze=False, sharey=True)
        for ax, ratio in zip(axes[0], ratios):
            sub = df[df.ratio == ratio]
            sns.boxplot(data=sub, x="method", y="AJI", order=order, ax=ax, color="#dddddd", fliersize=0)
            sns.stripplot(data=sub, x="method", y="AJI", order=order, ax=ax, size=2.5, alpha=0.6)
            ax.set_title(f"{ds}, labeled {ratio}")
            ax.set_xlabel("")
            ax.tick_params(axis="x", rotation=35)
        fig.suptitle("Per-test-unit AJI")
        fig.tight_layout()  # keeps the suptitle clear of the panel titles
        written += _save(fig, out / f"aji_distribution_{ds}")
    return written


def sweep_plot(results: Sequence[Result], option: str, out: Path) -> list[Path]:
    """Metric vs swept ``option`` value (lines per dataset/ratio), like the paper's Figs. 3/4."""
    import seaborn as sns

    plt = _plt()
    rows = []
    for r in results:
        if option in r.options and r.status == "done":
            for m in ("dice", "aji", "pq"):
                rows.append({"value": float(r.options[option]), "metric": m.upper() if m != "dice" else "Dice",
                             "score": 100 * r.scores[m], "series": f"{r.method} {r.dataset} {r.ratio}"})
            if r.val_scores:  # the curve that selects the value (see sweep tables)
                rows.append({"value": float(r.options[option]), "metric": "AJI (val)",
                             "score": 100 * r.val_scores["aji"], "series": f"{r.method} {r.dataset} {r.ratio}"})
    if not rows:
        return []
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data=df, x="value", y="score", hue="metric", style="series", marker="o", ax=ax)
    ax.set_xlabel(option)
    ax.set_ylabel("score (%)")
    ax.set_title(f"Sweep of {option}")
    return _save(fig, out / f"sweep_{option}")


def _contours(label: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(label, mode="inner")


def qualitative_panel(records: Sequence[CellRecord], out: Path, n_examples: int = 3) -> list[Path]:
    """Image, ground truth and each method's prediction (contours) on the same test patches."""
    from benchmark.store import load_predictions

    plt = _plt()
    written: list[Path] = []
    done = [r for r in records if r.status == "done" and not r.cell.get("method_options")
            and (r.path / "examples.npz").exists() and r.seed == min(x.seed for x in records)]
    groups: dict[tuple[str, str], list[CellRecord]] = {}
    for r in done:
        groups.setdefault((r.dataset, r.ratio), []).append(r)
    for (ds, ratio), recs in sorted(groups.items()):
        recs.sort(key=lambda r: method_sort_key(r.method))
        with np.load(recs[0].path / "examples.npz") as ex:
            ids = [str(x) for x in ex["ids"]][:n_examples]
            images, labels = ex["images"][: len(ids)], ex["labels"][: len(ids)]
        cols = 2 + len(recs)
        fig, axes = plt.subplots(len(ids), cols, figsize=(2.1 * cols, 2.1 * len(ids)), squeeze=False)
        for i, pid in enumerate(ids):
            panels = [("image", None), ("ground truth", labels[i])]
            for r in recs:
                preds = load_predictions(r.path / "predictions.npz")
                panels.append((r.method, preds.get(pid)))
            for j, (title, lab) in enumerate(panels):
                ax = axes[i][j]
                img = images[i].copy()
                if lab is not None:
                    img[_contours(lab)] = (0, 255, 0) if title == "ground truth" else (255, 230, 0)
                ax.imshow(img)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=9)
        fig.suptitle(f"{ds}, labeled {ratio}: test patches", fontsize=10)
        written += _save(fig, out / f"qualitative_{ds}_{ratio.replace('/', '-')}")
    return written
