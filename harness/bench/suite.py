"""P5: the synthetic suite (every method x every task, one seed) through the runner, in a cold cache.

The wall time is split by the ``timings`` of the records the runner wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.bench.profiles import PROFILES, BenchProfile
from harness.bench.report import Figure


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _suite_grid(profile: BenchProfile) -> tuple[list[str], dict[str, str], list[Any]]:
    """(methods that load, {method: why not} for those that do not, task specs)."""
    from harness.catalog import METHODS
    from harness.dispatch.runner import load_method
    from harness.tasks import load_task, task_files

    methods, unavailable = [], {}
    for name in profile.p5_methods or METHODS.names():
        try:
            load_method(name)
            methods.append(name)
        except Exception as exc:  # noqa: BLE001  (a method not built yet is reported, not fatal)
            unavailable[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    specs = [load_task(p) for p in task_files()]
    tasks = [t for t in specs if (t.name in profile.p5_tasks if profile.p5_tasks else t.dataset != "mock")]
    return methods, unavailable, tasks


SYNTH_SOURCE = {"mimic-cxr": "mimic", "chexpert": "chexpert", "nih14": "nih14", "openi": "openi"}


def _suite_runs(profile: BenchProfile, work: Path, methods: list[str], tasks: list[Any]) -> list[dict[str, Any]]:
    from harness.data.schema import DataError
    from harness.dispatch.runner import RunError, RunRequest, execute

    rows = []
    for method in methods:
        for task in tasks:
            req = RunRequest(method=method, task=task.name, seed=0, profile=profile.p5_profile,
                             data_root=str(work / "world"), results_dir=str(work / "results"), progress=False)
            t = time.perf_counter()
            row: dict[str, Any] = {"method": method, "task": task.name}
            try:
                rec = json.loads(execute(req).path.read_text())  # the record as the runner wrote it
                row.update(status="done", timings=rec["timings"], wall=rec["wall_time_s"],
                           main=f"{rec['main_metric']} {rec['metrics'][rec['main_metric']]:.3f}")
            except (RunError, DataError) as exc:  # a combination declined: a capability, or data the method needs
                row.update(status="refused", why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            except Exception as exc:  # noqa: BLE001  (a broken cell is reported in the table, the rest still run)
                row.update(status="failed", why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            row["elapsed"] = time.perf_counter() - t
            rows.append(row)
    return rows


def bench_suite(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """P5: every method x task through ``runner.execute`` in a cold cache; time split by the records' ``timings``."""
    from harness.synth import write_world

    methods, unavailable, tasks = _suite_grid(profile)
    sources = sorted({SYNTH_SOURCE[d] for t in tasks for d in (t.dataset, t.eval_dataset) if d in SYNTH_SOURCE})
    with _env("HARNESS_CACHE", str(work / "cache")):  # cold: no image, feature or pretraining cache hits
        t = time.perf_counter()
        if sources:
            write_world(work / "world", sources=sources, scale=profile.p5_world_scale, seed=0, progress=False)
        t_world = time.perf_counter() - t
        rows = _suite_runs(profile, work, methods, tasks)
    done = [r for r in rows if r["status"] == "done"]
    parts = {k: sum(r["timings"].get(k, 0.0) for r in done) for k in ("data_s", "pretrain_s", "extract_s",
                                                                      "protocol_s")}
    total_runs = sum(r["elapsed"] for r in rows)
    wall_done = sum(r["wall"] for r in done)
    split = [("synthetic world generation (once)", t_world), ("data: records, cohort, image cache", parts["data_s"]),
             ("pretraining", parts["pretrain_s"]), ("feature extraction", parts["extract_s"]),
             ("protocols without extraction (probe fits, fine-tuning, scoring, bootstrap)",
              parts["protocol_s"] - parts["extract_s"]),
             ("other (encoder load, weights hash, record)",
              wall_done - parts["data_s"] - parts["pretrain_s"] - parts["protocol_s"]),
             ("refused / failed runs (until the refusal)", total_runs - sum(r["elapsed"] for r in done))]
    total = t_world + total_runs
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "refused", "failed")}
    fig = Figure("P5", f"synthetic suite ({profile.p5_profile} profile, seed 0, fraction 1)",
                 f"{total:.0f} s, {counts['done']} runs done, {counts['refused']} refused, {counts['failed']} failed",
                 None, "where the time goes", None)
    full = PROFILES[profile.name]
    subset = ("" if (profile.p5_methods, profile.p5_tasks) == (None, None) else
              f" **Subset** ({'quick mode' if profile.name == 'quick' else 'chosen with --suite-methods/--suite-tasks'}"
              f"): methods {list(methods)}, tasks {[t.name for t in tasks]}"
              + ("" if full.p5_methods is not None or profile.p5_methods is None else
                 "; the whole grid is `python -m harness bench --only P5`") + ".")
    lines = [f"Methods {methods} x tasks {[t.name for t in tasks]} through `runner.execute` with an empty "
             f"`HARNESS_CACHE` (every image cache, feature cache and pretraining is built during the run), the "
             f"synthetic world at scale {profile.p5_world_scale:g}.{subset} Methods not in this checkout: "
             f"{unavailable or 'none'}. Split from the `timings` of the records the runner wrote (`extract_s` is "
             "the part of `protocol_s` spent in `extract_features`). Refused: the combination was declined before "
             "any training, for a capability the task requires (RunError) or data the method needs, such as "
             "reports or EHR (DataError); failed: anything else.", "",
             "| where | seconds | share |", "|---|---|---|"]
    lines += [f"| {name} | {sec:.1f} | {100 * sec / max(total, 1e-9):.0f} % |" for name, sec in split]
    lines += ["", "| method | task | status | wall s | data s | pretrain s | extract s | protocol s | main metric |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tm = r.get("timings", {})
        cells = [f"{tm.get(k, 0):.1f}" if tm else "" for k in ("data_s", "pretrain_s", "extract_s", "protocol_s")]
        lines.append(f"| {r['method']} | {r['task']} | {r['status']} | {r['elapsed']:.1f} | {' | '.join(cells)} | "
                     f"{r.get('main', r.get('why', ''))} |")
    return fig, "\n".join(lines)
