"""Leaderboard pictures, drawn from result records only (matplotlib, Agg backend: no display needed).

- ``label_efficiency_png``: a task's main metric against the label fraction, one line per
  method (mean over seeds), with a band: the interval of the leaderboard's cell
  (``harness.reporting.cells``: the 95 % t-interval over seeds when they vary, else the
  record's own bootstrap CI for the main metric); a point no run could measure is left out.
- ``regeneration_grid_png``: original / masked / regenerated examples from the
  ``--save-predictions`` npz of a regeneration run (``harness.protocols.regeneration``
  saves ``original``, ``masked_p{p}``, ``regenerated_p{p}`` as ``(n, S, S)`` uint8).

``harness.reporting.leaderboard.render_all`` writes them next to each task's markdown and links
them from it. Synthetic pictures say so in their title, as every synthetic table does.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, never a display dependency
    import matplotlib.pyplot as plt

    return plt


def efficiency_points(recs: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, float]]]:
    """method -> sorted ``(fraction, mean, low, high)`` of the main metric (latest task version).

    Band: the leaderboard cell's interval (``cells.cell_of``), else the point.
    """
    from harness.reporting.cells import cell_of

    latest = max(r["task_version"] for r in recs)
    main = recs[0]["main_metric"]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        if r["task_version"] == latest and main in r["metrics"]:
            groups[(r["method"], float(r["fraction"]))].append(r)
    out: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for (method, fraction), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: r["seed"])
        cell = cell_of([r["metrics"][main] for r in group], [r.get("ci", {}).get(main) for r in group])
        if math.isnan(cell.mean):
            continue
        low, high = cell.interval
        out[method].append((fraction, cell.mean, float(low), float(high)))
    return dict(out)


def label_efficiency_png(task: str, data_source: str, recs: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the label-efficiency picture; None when no method has two or more fractions."""
    points = efficiency_points(recs)
    if not any(len(p) >= 2 for p in points.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for method, pts in sorted(points.items()):
        x, mean, low, high = (np.array(v) for v in zip(*pts, strict=True))
        line, = ax.plot(x, mean, marker="o", label=method)
        ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
    ax.set_xscale("log")
    fractions = sorted({p[0] for pts in points.values() for p in pts})
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.set_xlabel("label fraction of the training split")
    ax.set_ylabel(recs[0]["main_metric"])
    ax.set_title(f"{task} ({data_source} data): mean over seeds, 95 % band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def regeneration_grid_png(npz: Path, title: str, path: Path, max_rows: int = 4) -> Path | None:
    """Write an examples x (original, masked, regenerated per patch size) grid; None without examples."""
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    if "original" not in arrays:
        return None
    scales = sorted(int(m.group(1)) for k in arrays if (m := re.fullmatch(r"masked_p(\d+)", k)))
    columns = [("original", "original")] + [(f"{kind}_p{p}", f"{kind} p{p}") for p in scales
                                            for kind in ("masked", "regenerated") if f"{kind}_p{p}" in arrays]
    rows = min(max_rows, len(arrays["original"]))
    if rows == 0:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.4), dpi=100,
                             squeeze=False)
    for i in range(rows):
        for j, (key, label) in enumerate(columns):
            ax = axes[i][j]
            ax.imshow(arrays[key][i], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def task_pictures(task: str, data_source: str, recs: list[dict[str, Any]], results_dir: Path,
                  out_dir: Path) -> list[tuple[str, Path]]:
    """Every picture for one (data source, task) table: ``(caption, png path)`` pairs."""
    from harness.results import record_path

    out: list[tuple[str, Path]] = []
    curve = label_efficiency_png(task, data_source, recs, out_dir / f"{task}-label-efficiency.png")
    if curve:
        out.append(("label efficiency: main metric vs label fraction", curve))
    done: set[str] = set()
    for r in sorted(recs, key=lambda r: (r["method"], r["seed"])):
        name = r.get("predictions_file")
        if r.get("protocol") != "regeneration" or not name or r["method"] in done:
            continue
        npz = record_path(results_dir, r).parent / name
        if not npz.is_file():
            continue
        title = f"{task} ({data_source} data): {r['method']}, seed {r['seed']}"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", r["method"])
        grid = regeneration_grid_png(npz, title, out_dir / f"{task}-{safe}-regeneration.png")
        if grid:
            done.add(r["method"])
            out.append((f"regeneration examples: {r['method']}", grid))
    return out
