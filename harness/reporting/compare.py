"""Paired comparison of two leaderboard rows over the seeds they share.

Two methods evaluated with the same seeds (same label-fraction subset, same probe
initialisation, same bootstrap; and, with ``--set seed=N``, the same pretraining seed)
differ by less than their seed-to-seed spread suggests: the spread is mostly the
subset, which both share. The paired difference per seed, its mean and a Student-t
95 % interval say whether one row beats the other by more than the noise::

    python -m harness compare --results results --task mimic-cls "msn-ehr" "msn"

The last column is the leaderboard's paired bootstrap over the same test patients
(``harness.reporting.pairing``): the interval from test-set resampling, which the seed-paired
t-interval does not see (and which exists with one seed, or identical seeds).

Rows are named as on the leaderboard (``harness.reporting.leaderboard.row_names``), within the
runs of one data (``harness.results.data_fingerprint``): runs on different data are never
paired. The two rows are compared on each data both have (one table each, labelled with
the data's fingerprint and world); two rows that share no data are refused with an error
that names each row's data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from harness.reporting.leaderboard import data_groups, row_names
from harness.reporting.pairing import Pairing
from harness.results import load_records, world_label


def paired(recs: list[dict[str, Any]], a: str, b: str, metric: str | None = None,
           results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per label fraction: the seeds both rows have, their means and the paired difference ``a - b``.

    With ``results_dir`` each fraction also gets ``bootstrap``: the paired bootstrap over test patients
    (``pairing.Pairing.compare``: a ``PairedComparison``, or why there is none).

    Raises:
        KeyError: a row name that no record of ``recs`` has (the message lists the names there are).
    """
    names = row_names(recs)
    for row in (a, b):
        if row not in names:
            raise KeyError(f"no row {row!r}; rows: {sorted(set(names))}")
    metric = metric or recs[0]["main_metric"]
    values: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    runs: dict[float, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for name, r in zip(names, recs):
        if name in (a, b) and metric in r["metrics"]:
            values[(name, r["fraction"])][r["seed"]] = float(r["metrics"][metric])
            runs[r["fraction"]][name].append(r)
    out = []
    for fraction in sorted({f for _, f in values}):
        seeds = sorted(set(values[(a, fraction)]) & set(values[(b, fraction)]))
        if not seeds:
            continue
        xa = np.array([values[(a, fraction)][s] for s in seeds])
        xb = np.array([values[(b, fraction)][s] for s in seeds])
        d = xa - xb
        half = (stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        row = {"fraction": fraction, "seeds": seeds, "metric": metric, "a": xa, "b": xb, "diff": d,
               "mean_diff": float(d.mean()), "ci95": (float(d.mean() - half), float(d.mean() + half)),
               "wins": int((d > 0).sum())}
        if results_dir is not None:
            shared = {name: [r for r in rs if r["seed"] in seeds] for name, rs in runs[fraction].items()}
            row["bootstrap"] = Pairing(results_dir, metric, shared).compare(a, b)
        out.append(row)
    return out


def _ms(x: np.ndarray) -> str:
    return f"{x.mean():.4f} ± {x.std(ddof=1):.4f}" if len(x) > 1 else f"{x[0]:.4f}"


def render(task: str, a: str, b: str, rows: list[dict[str, Any]], data: str = "") -> str:
    """The markdown table of ``paired``'s rows; ``data`` (the data's fingerprint and world) heads it when given."""
    boot = any("bootstrap" in r for r in rows)
    lines = [f"### {task}: {a} vs {b} (paired by seed)", "", *([f"data: {data}", ""] if data else []),
             f"| fraction | seeds | {a} | {b} | mean difference | 95 % CI (t) | {a} better |"
             + (" paired bootstrap over test patients |" if boot else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if boot else "")]
    for r in rows:
        lo, hi = r["ci95"]
        if math.isnan(lo):
            ci = "n/a (one seed)"
        elif np.ptp(r["diff"]) == 0:  # e.g. a deterministic probe at 100 % labels on one pretraining
            ci = "n/a (identical across seeds)"
        else:
            ci = f"[{lo:+.4f}, {hi:+.4f}]"
        line = (f"| {r['fraction']:g} | {len(r['seeds'])} | {_ms(r['a'])} | {_ms(r['b'])} | "
                f"{r['mean_diff']:+.4f} | {ci} | {r['wins']}/{len(r['seeds'])} |")
        if boot:
            cmp = r.get("bootstrap", "not computed")
            line += (f" n/a: {cmp} |" if isinstance(cmp, str)
                     else f" {cmp.delta:+.4f} [{cmp.lo:+.4f}, {cmp.hi:+.4f}] |")
        lines.append(line)
    metric = rows[0]["metric"] if rows else "?"
    lines += ["", f"metric: `{metric}`; cells: mean ± std over the shared seeds."]
    return "\n".join(lines) + "\n"


def compare(results_dir: str | Path, task: str, a: str, b: str, metric: str | None = None,
            data_source: str | None = None) -> str:
    """The markdown paired table(s) of rows ``a`` and ``b`` on ``task``: one data source, one table per data both have.

    Raises:
        ValueError: no records of the task, records of both data sources without ``data_source``,
            or the two rows computed on different data (the message names each row's data fingerprints).
        KeyError: a row that no record has (the message lists the rows there are).
    """
    records, _ = load_records(results_dir)
    recs = [r for r in records if r["task"] == task]
    sources = sorted({r["data_source"] for r in recs})
    if data_source:
        recs = [r for r in recs if r["data_source"] == data_source]
    elif len(sources) > 1:
        raise ValueError(f"{task}: records from {sources}; choose one with --data-source")
    if not recs:
        raise ValueError(f"no records of task {task!r} under {results_dir}")
    latest = max(r["task_version"] for r in recs)
    recs = [r for r in recs if r["task_version"] == latest]
    groups = [(fp, group, set(row_names(group))) for fp, group in data_groups(recs)]
    where = {row: [fp for fp, _, names in groups if row in names] for row in (a, b)}
    shared = [(fp, group) for fp, group, names in groups if a in names and b in names]
    if not shared:
        if where[a] and where[b]:
            raise ValueError(f"{task}: rows {a!r} and {b!r} were computed on different data ({a!r}: "
                             f"{', '.join(where[a])}; {b!r}: {', '.join(where[b])}): runs on different data are "
                             "never paired")
        missing = a if not where[a] else b
        raise KeyError(f"no row {missing!r}; rows: {sorted({n for _, _, names in groups for n in names})}")
    text = "".join(render(task, a, b, paired(group, a, b, metric, results_dir), f"`{fp}` ({world_label(group[0])})")
                   + "\n" for fp, group in shared)
    unpaired = [f"{row!r} also has runs on data {fp}, which the other row lacks (not paired)"
                for row in (a, b) for fp in where[row] if fp not in {f for f, _ in shared}]
    label = "synthetic data: says nothing about real chest X-rays. " if recs[0]["data_source"] == "synthetic" else ""
    return text + "".join(f"{line}\n" for line in unpaired) + f"{label}task version v{latest}.\n"
