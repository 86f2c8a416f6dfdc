"""Compare reproduced numbers with published (or reference) ones: ``python -m harness regress``.

::

    python -m harness regress --against published                       # real-data records vs papers
    python -m harness regress --results r --against published --out docs/regress.md
    python -m harness regress --results r --against leaderboards/reference/reference.yaml
    python -m harness regress --regenerate-reference                    # rewrite the CI reference

A reference file (``leaderboards/published.yaml``, ``leaderboards/reference/reference.yaml``)
is a mapping with ``data_source`` (``real``, the default, or ``synthetic``) and ``entries``.
Records are matched to an entry by method, task, protocol, label fraction (and ``profile``
when the entry names one) and by data source: synthetic records never match a real-data
figure. Records of different data (``harness.results.data_fingerprint``: another synthetic
world, another version of a real dataset) are never averaged or subtracted: an entry is
compared on the one data its records (both methods' for a difference) share, and the
table's ``data`` column names it. Verdicts:

- ``pass`` / ``FAIL``: an absolute figure is reproduced within its tolerance (mean over
  seeds), or a claimed difference (``method`` minus ``versus``) lies within tolerance of
  the reproduced difference or inside the reproduced difference's 95 % interval;
- ``not run``: no record matches (never counted as a pass);
- ``synthetic: not comparable``: only synthetic-data records match a real-data figure
  (and ``real: not comparable`` the other way round);
- ``different data: not comparable``: the records are on several data, or a difference's
  two methods share none (the ``data`` column lists the fingerprints); never a pass;
- ``info``: the entry is ``verified: false`` (secondary or unofficial): shown, never pass/fail.

How the reproduced difference's interval is computed (column "interval"):

1. ``paired bootstrap``: when both methods' records have predictions (every run keeps its
   scores and targets, ``harness.metrics.paired``) for the same seeds on the same test targets,
   ``harness.metrics.paired_bootstrap`` resamples the test PATIENTS (the kept anonymous patient
   index, ``groups``; older predictions without it are resampled by image) identically for both
   methods; with several seeds, the per-resample differences are averaged over seeds
   (``bootstrap_values`` with the same resample seed), so the interval is that of the
   seed-averaged difference, from test-set resampling.
2. ``t over seeds``: otherwise, the difference of the per-seed means with a Welch
   t-interval over seeds (one seed each: the interval is the point).

The exit code is 1 when anything FAILs, else 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from harness.results import data_fingerprint, load_predictions, load_records
from harness.storage import REPOSITORY

PUBLISHED = REPOSITORY / "leaderboards" / "published.yaml"
ENTRY_KEYS = {"paper", "id", "where", "method", "versus", "dataset", "task", "protocol", "fraction", "metric",
              "value", "unit", "kind", "evidence", "verified", "tolerance"}
OPTIONAL_KEYS = {"profile", "note", "seed_std", "n_seeds"}
EVIDENCE = {"ABS", "CODE", "2ND", "UNVERIFIED", "REFERENCE"}
BOOTSTRAP_RESAMPLES = 1000


class RegressError(ValueError):
    """A reference file that does not validate; names the file and the entry."""


@dataclass
class Row:
    entry: dict[str, Any]
    verdict: str
    reproduced: float | None = None
    interval: tuple[float, float] | None = None
    n: int = 0
    how: str = ""  # how the interval was computed
    data: str = ""  # the data fingerprint(s) of the records (harness.results.data_fingerprint)

    @property
    def published(self) -> float:
        return self.entry["value"] / (100.0 if self.entry["unit"] == "percent" else 1.0)


@dataclass(frozen=True)
class Reference:
    path: Path
    data_source: str
    entries: list[dict[str, Any]]


def load_reference(path: str | Path) -> Reference:
    """Read and validate a reference file (see the module docstring)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = raw.get("entries") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise RegressError(f"{path}: expected a mapping with an 'entries' list")
    source = raw.get("data_source", "real")
    if source not in ("real", "synthetic"):
        raise RegressError(f"{path}: data_source must be real or synthetic, got {source!r}")
    for i, e in enumerate(entries):
        missing, unknown = ENTRY_KEYS - set(e), set(e) - ENTRY_KEYS - OPTIONAL_KEYS
        if missing or unknown:
            raise RegressError(f"{path}: entry {i}: missing {sorted(missing)} / unknown {sorted(unknown)} keys")
        if e["kind"] not in ("absolute", "difference") or e["unit"] not in ("percent", "fraction"):
            raise RegressError(f"{path}: entry {i}: kind must be absolute|difference, unit percent|fraction")
        if e["kind"] == "difference" and not e["versus"]:
            raise RegressError(f"{path}: entry {i}: a difference needs 'versus'")
        if e["evidence"] not in EVIDENCE:
            raise RegressError(f"{path}: entry {i}: evidence must be one of {sorted(EVIDENCE)}")
    return Reference(path, source, entries)


def load_entries(path: str | Path) -> list[dict[str, Any]]:
    return load_reference(path).entries


# ------------------------------------------------------------------------------------------ matching


def _by_data(records: list[dict[str, Any]], method: str, entry: dict[str, Any], source: str
             ) -> dict[str, list[dict]]:
    """Data fingerprint -> one record per seed of ``method`` for the entry (latest task version; last
    written wins within one data, never across data)."""
    found = [r for r in records if r["method"] == method and r["task"] == entry["task"]
             and r.get("protocol", entry["protocol"]) == entry["protocol"]
             and math.isclose(r["fraction"], entry["fraction"]) and r["data_source"] == source
             and entry["metric"] in r["metrics"]
             and (entry.get("profile") is None or r.get("profile") == entry["profile"])]
    if not found:
        return {}
    latest = max(r["task_version"] for r in found)
    groups: dict[str, dict[Any, dict]] = defaultdict(dict)
    for r in found:
        if r["task_version"] == latest:
            groups[data_fingerprint(r)][r["seed"]] = r
    return {fp: [by_seed[s] for s in sorted(by_seed)] for fp, by_seed in groups.items()}


def _matching(records: list[dict[str, Any]], method: str, entry: dict[str, Any], source: str) -> list[dict]:
    """The records of ``method`` for the entry, all data together (only to tell "not run" from "not comparable")."""
    return [r for group in _by_data(records, method, entry, source).values() for r in group]


def _t_interval(a: list[float], b: list[float] | None = None) -> tuple[float, float, float]:
    """Mean (or difference of means) and a 95 % t-interval over seeds (Welch for a difference)."""
    a_ = np.asarray(a, dtype=float)
    va = a_.var(ddof=1) / len(a_) if len(a_) > 1 else 0.0
    if b is None:
        est, var, df = a_.mean(), va, len(a_) - 1
    else:
        b_ = np.asarray(b, dtype=float)
        vb = b_.var(ddof=1) / len(b_) if len(b_) > 1 else 0.0
        est, var = a_.mean() - b_.mean(), va + vb
        df = (var**2 / ((va**2 / max(len(a_) - 1, 1)) + (vb**2 / max(len(b_) - 1, 1)))) if var > 0 else 0
    if var == 0 or df < 1:
        return float(est), float(est), float(est)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    return float(est), float(est - half), float(est + half)


def _groups(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """The patients both predictions share (their kept ``groups``), else one group per test image."""
    if "groups" in a and "groups" in b and np.array_equal(a["groups"], b["groups"]):
        return a["groups"]
    return np.arange(len(a["targets"]))


def paired_difference(pairs: list[tuple[dict, dict]], metric: str) -> tuple[float, float, float] | None:
    """Seed-averaged paired-bootstrap difference ``metric(A) - metric(B)`` and its 95 % interval.

    ``pairs`` holds, per seed, the two methods' predictions (``scores``, ``targets`` and, when kept,
    ``groups``: the bootstrap then resamples patients, else images). With one seed this is exactly
    ``harness.metrics.paired_bootstrap``. Returns None when the metric is not a score metric or the
    predictions do not pair (different test targets).
    """
    from harness import metrics

    if metric not in metrics.SCORE_METRICS or not pairs:
        return None
    fn = metrics.METRICS[metric]
    for a, b in pairs:
        if not all(k in p for p in (a, b) for k in ("scores", "targets")):
            return None
        if a["targets"].shape != b["targets"].shape or not np.array_equal(a["targets"], b["targets"], equal_nan=True):
            return None
    if len(pairs) == 1:
        a, b = pairs[0]
        cmp = metrics.paired_bootstrap(fn, a["targets"], a["scores"], b["scores"], _groups(a, b),
                                       n=BOOTSTRAP_RESAMPLES)
        return cmp.delta, cmp.lo, cmp.hi
    deltas, draws = [], []
    for a, b in pairs:
        groups = _groups(a, b)
        deltas.append(fn(a["targets"], a["scores"]) - fn(b["targets"], b["scores"]))
        draws.append(metrics.bootstrap_values(fn, a["targets"], a["scores"], groups=groups, n=BOOTSTRAP_RESAMPLES)
                     - metrics.bootstrap_values(fn, b["targets"], b["scores"], groups=groups, n=BOOTSTRAP_RESAMPLES))
    mean_draws = np.mean(draws, axis=0)
    mean_draws = mean_draws[~np.isnan(mean_draws)]
    lo, hi = np.percentile(mean_draws, [2.5, 97.5])
    return float(np.mean(deltas)), float(lo), float(hi)


def _difference(results_dir: Path | None, a: list[dict], b: list[dict], metric: str) -> tuple[tuple, str]:
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if results_dir is not None and seeds:
        by_a, by_b = {r["seed"]: r for r in a}, {r["seed"]: r for r in b}
        preds = [(load_predictions(results_dir, by_a[s]), load_predictions(results_dir, by_b[s])) for s in seeds]
        if all(pa is not None and pb is not None for pa, pb in preds):
            paired = paired_difference(preds, metric)  # type: ignore[arg-type]
            if paired is not None:
                return paired, f"paired bootstrap ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
    return _t_interval([r["metrics"][metric] for r in a], [r["metrics"][metric] for r in b]), "t over seeds"


def compare(records: list[dict[str, Any]], entries: list[dict[str, Any]], source: str = "real",
            results_dir: Path | None = None, tolerance: float | None = None) -> list[Row]:
    """One ``Row`` per entry. ``tolerance`` (metric scale, e.g. 0.01) overrides every entry's own."""
    rows = []
    for e in entries:
        if e["task"] is None:
            rows.append(Row(e, "not run (no harness task)"))
            continue
        by_a = _by_data(records, e["method"], e, source)
        by_b = _by_data(records, e["versus"], e, source) if e["kind"] == "difference" else None
        if not by_a or (by_b is not None and not by_b):
            other = "synthetic" if source == "real" else "real"
            elsewhere = _matching(records, e["method"], e, other)
            rows.append(Row(e, f"{other}: not comparable" if elsewhere else "not run"))
            continue
        shared = sorted(set(by_a) & set(by_b)) if by_b is not None else sorted(by_a)
        if len(shared) != 1:  # averaging or subtracting runs of different data would mean nothing
            data = (", ".join(shared) if shared else
                    f"{e['method']}: {', '.join(sorted(by_a))}; {e['versus']}: {', '.join(sorted(by_b or {}))}")
            rows.append(Row(e, "different data: not comparable", data=data))
            continue
        a, b = by_a[shared[0]], (by_b[shared[0]] if by_b is not None else None)
        if b is None:
            (est, lo, hi), how = _t_interval([r["metrics"][e["metric"]] for r in a]), "t over seeds"
        else:
            (est, lo, hi), how = _difference(results_dir, a, b, e["metric"])
        scale = 100.0 if e["unit"] == "percent" else 1.0
        tol = tolerance if tolerance is not None else e["tolerance"] / scale
        row = Row(e, "", est, (lo, hi), len(a), how, shared[0])
        ok = abs(est - row.published) <= tol + 1e-12 or (e["kind"] == "difference" and lo <= row.published <= hi)
        row.verdict = "info (unverified)" if not e["verified"] else "pass" if ok else "FAIL"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ output


def render(rows: list[Row], source: str, against: str = "published") -> str:
    lines = ["<!-- generated by `python -m harness regress`; do not edit by hand -->", "",
             f"# Regression of {source}-data records against {against}", "",
             "| paper | method | task | fraction | metric | kind | published | reproduced | interval (95 %) | "
             "delta | data | verdict |", "|---" * 12 + "|"]
    for r in rows:
        e = r.entry
        what = e["method"] + (f" − {e['versus']}" if e["kind"] == "difference" else "")
        rep = interval = delta = ""
        if r.reproduced is not None and r.interval is not None:
            rep = f"{r.reproduced:.4f} (n={r.n})"
            interval = f"{r.interval[0]:.4f}–{r.interval[1]:.4f} ({r.how})"
            delta = f"{r.reproduced - r.published:+.4f}"
        lines.append(f"| {e['paper']} | {what} | {e['task'] or '—'} | {e['fraction']:g} | {e['metric']} | "
                     f"{e['kind']} | {r.published:.4f} | {rep} | {interval} | {delta} | {r.data} | {r.verdict} |")
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.verdict.split(" (")[0]] += 1
    lines += ["", "Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
              "", "Values on the metric's own scale (AUROC 0-1); delta = reproduced − published; data = the records' "
              "data fingerprint (harness.results.data_fingerprint)."]
    return "\n".join(lines) + "\n"


def run_regress(results_dir: str | Path, against: str, out: str | Path | None = None,
                data_source: str | None = None, tolerance: float | None = None) -> tuple[int, str]:
    """Returns (exit code, markdown). ``against``: ``published`` or a reference YAML file.

    ``data_source`` defaults to the file's own (``real`` for published figures); asking to
    compare synthetic records with published real-data figures is refused.
    """
    ref = load_reference(PUBLISHED if against == "published" else against)
    source = data_source or ref.data_source
    if source != ref.data_source:
        raise RegressError(f"{ref.path} holds {ref.data_source}-data figures: {source} records are never compared "
                           "with them (use a reference file of the same data source)")
    records, _ = load_records(results_dir)
    rows = compare(records, ref.entries, source, Path(results_dir), tolerance)
    text = render(rows, source, "published numbers" if against == "published" else Path(against).name)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return (1 if any(r.verdict == "FAIL" for r in rows) else 0), text
