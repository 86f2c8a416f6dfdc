"""Compare reproduced numbers with published ones: ``python -m harness regress``.

Records are matched to entries of ``leaderboards/published.yaml`` (or another file
of the same shape) by method, task, protocol and label fraction. Verdicts:

- ``pass`` / ``FAIL``: an absolute figure is reproduced within its tolerance, or a
  claimed difference (``method`` minus ``versus``) lies within tolerance of the
  reproduced difference or inside its 95 % interval;
- ``not run``: no record matches (never counted as a pass);
- ``not comparable``: only synthetic-data records match a real-data figure;
- ``info``: the entry is ``verified: false`` (a secondary or unofficial figure):
  shown, never pass/fail.

The reproduced difference and its interval come from the per-seed means of the two
methods' main metric (difference of means, Welch t-interval over seeds); with one
seed each the interval is the point. The exit code is 1 when anything FAILs.
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

from harness.results import load_records

PUBLISHED = Path(__file__).resolve().parent.parent / "leaderboards" / "published.yaml"
ENTRY_KEYS = {"paper", "id", "where", "method", "versus", "dataset", "task", "protocol", "fraction", "metric",
              "value", "unit", "kind", "evidence", "verified", "tolerance"}


class RegressError(ValueError):
    """A published-numbers file that does not validate; names the file and entry."""


@dataclass
class Row:
    entry: dict[str, Any]
    verdict: str
    reproduced: float | None = None
    interval: tuple[float, float] | None = None
    n: int = 0

    @property
    def published(self) -> float:
        return self.entry["value"] / (100.0 if self.entry["unit"] == "percent" else 1.0)


def load_entries(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = raw.get("entries") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise RegressError(f"{path}: expected a mapping with an 'entries' list")
    for i, e in enumerate(entries):
        missing, unknown = ENTRY_KEYS - set(e), set(e) - ENTRY_KEYS
        if missing or unknown:
            raise RegressError(f"{path}: entry {i}: missing {sorted(missing)} / unknown {sorted(unknown)} keys")
        if e["kind"] not in ("absolute", "difference") or e["unit"] not in ("percent", "fraction"):
            raise RegressError(f"{path}: entry {i}: kind must be absolute|difference, unit percent|fraction")
        if e["kind"] == "difference" and not e["versus"]:
            raise RegressError(f"{path}: entry {i}: a difference needs 'versus'")
    return entries


def _seed_values(records: list[dict[str, Any]], method: str, entry: dict[str, Any], source: str) -> list[float]:
    """Per-seed values of the entry's metric for one method (latest task version only)."""
    found = [r for r in records if r["method"] == method and r["task"] == entry["task"]
             and r.get("protocol", entry["protocol"]) == entry["protocol"]
             and math.isclose(r["fraction"], entry["fraction"]) and r["data_source"] == source
             and entry["metric"] in r["metrics"]]
    if not found:
        return []
    latest = max(r["task_version"] for r in found)
    by_seed = {r["seed"]: r["metrics"][entry["metric"]] for r in found if r["task_version"] == latest}
    return [by_seed[s] for s in sorted(by_seed)]


def _interval(a: list[float], b: list[float] | None = None) -> tuple[float, float, float]:
    """Mean (difference) and a 95 % t-interval over seeds (Welch for a difference)."""
    a_ = np.asarray(a, dtype=float)
    if b is None:
        est, var, df = a_.mean(), (a_.var(ddof=1) / len(a_) if len(a_) > 1 else 0.0), len(a_) - 1
    else:
        b_ = np.asarray(b, dtype=float)
        va = a_.var(ddof=1) / len(a_) if len(a_) > 1 else 0.0
        vb = b_.var(ddof=1) / len(b_) if len(b_) > 1 else 0.0
        est, var = a_.mean() - b_.mean(), va + vb
        df = (var**2 / ((va**2 / max(len(a_) - 1, 1)) + (vb**2 / max(len(b_) - 1, 1)))) if var > 0 else 0
    if var == 0 or df < 1:
        return float(est), float(est), float(est)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    return float(est), float(est - half), float(est + half)


def compare(records: list[dict[str, Any]], entries: list[dict[str, Any]], source: str = "real") -> list[Row]:
    rows = []
    for e in entries:
        if e["task"] is None:
            rows.append(Row(e, "not run (no harness task)"))
            continue
        a = _seed_values(records, e["method"], e, source)
        b = _seed_values(records, e["versus"], e, source) if e["kind"] == "difference" else None
        if not a or (b is not None and not b):
            other = "synthetic" if source == "real" else "real"
            comparable = _seed_values(records, e["method"], e, other)
            rows.append(Row(e, "not comparable (synthetic data only)" if comparable else "not run"))
            continue
        est, lo, hi = _interval(a, b)
        scale = 100.0 if e["unit"] == "percent" else 1.0
        tol = e["tolerance"] / scale
        row = Row(e, "", est, (lo, hi), len(a))
        ok = abs(est - row.published) <= tol or (e["kind"] == "difference" and lo <= row.published <= hi)
        row.verdict = ("info" if not e["verified"] else "pass" if ok else "FAIL")
        rows.append(row)
    return rows


def render(rows: list[Row], source: str) -> str:
    lines = ["<!-- generated by `python -m harness regress`; do not edit by hand -->", "",
             f"# Regression against published numbers ({source} records)", "",
             "| paper | method | task | fraction | metric | kind | published | reproduced (95 % CI, n) | delta | "
             "verdict |", "|---" * 10 + "|"]
    for r in rows:
        e = r.entry
        what = e["method"] + (f" − {e['versus']}" if e["kind"] == "difference" else "")
        if r.reproduced is None:
            rep, delta = "", ""
        else:
            rep = f"{r.reproduced:.4f} ({r.interval[0]:.4f}–{r.interval[1]:.4f}, n={r.n})"
            delta = f"{r.reproduced - r.published:+.4f}"
        lines.append(f"| {e['paper']} | {what} | {e['task'] or '—'} | {e['fraction']:g} | {e['metric']} | "
                     f"{e['kind']} | {r.published:.4f} | {rep} | {delta} | {r.verdict} |")
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.verdict.split(" (")[0]] += 1
    lines += ["", "Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    return "\n".join(lines) + "\n"


def run_regress(results_dir: str | Path, against: str, out: str | Path | None = None,
                data_source: str = "real") -> tuple[int, str]:
    """Returns (exit code, markdown). ``against`` is ``published`` or a YAML file of the same shape."""
    if against == "published" and data_source != "real":
        raise RegressError("published figures are real-data figures: compare synthetic records against a "
                           "synthetic reference file (--against FILE), never against published numbers")
    path = PUBLISHED if against == "published" else Path(against)
    entries = load_entries(path)
    records, _ = load_records(results_dir)
    rows = compare(records, entries, data_source)
    text = render(rows, data_source)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return (1 if any(r.verdict == "FAIL" for r in rows) else 0), text
