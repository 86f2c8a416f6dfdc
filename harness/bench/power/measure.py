"""The runs behind ``docs/power.md``: every (method, task) through the runner, and what each record says.

Each cell is one ordinary ``harness.dispatch.runner.execute`` run (its pretraining and features
cached like any run's, its record written under ``--results``), so every figure of the document
can be found again in a real record. A method that lacks a capability the task requires is not
run (``not capable``); a run the harness refuses (too small a gallery, data that is absent) is
reported with its one-line reason (``refused``); anything else is a ``failed`` cell, and the
other cells still run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Cell:
    """One (method, task) of the grid: its status, and its record when it ran.

    ``status`` is ``done``, ``not capable``, ``refused`` or ``failed``; ``why`` says why it is not done.
    """

    method: str
    task: str
    status: str
    why: str = ""
    record: dict[str, Any] | None = None
    path: Path | None = None
    paired: Any = None  # PairedComparison against the reference row, or why there is none (str)

    @property
    def value(self) -> float | None:
        """The main metric (None when not done, NaN when not measurable)."""
        return None if self.record is None else float(self.record["metrics"][self.record["main_metric"]])

    @property
    def ci(self) -> tuple[float, float] | None:
        """The record's 95 % CI of the main metric, or None when it has none (or a NaN one)."""
        if self.record is None:
            return None
        ci = self.record.get("ci", {}).get(self.record["main_metric"])
        if not ci or any(v is None or math.isnan(float(v)) for v in ci):
            return None
        return float(ci[0]), float(ci[1])

    @property
    def half_width(self) -> float | None:
        """Half the width of the record's CI (a percentile interval: not always centred on the value)."""
        ci = self.ci
        return None if ci is None else (ci[1] - ci[0]) / 2

    def ci_missing(self) -> str:
        """Why the record has no CI of its main metric (its ``details.not_measurable``), or ''."""
        if self.record is None or self.ci is not None:
            return ""
        why = (self.record.get("details", {}).get("not_measurable") or {}).get(f"ci of {self.record['main_metric']}")
        return str(why or "the record's interval is empty or NaN")


@dataclass
class Grid:
    """What ``measure`` asks for: methods x tasks at one fraction, seed and profile, on one data root."""

    methods: list[str]
    tasks: list[Any]  # TaskSpec
    fraction: float = 1.0
    seed: int = 0
    profile: str | None = None
    data_root: str | None = None
    results_dir: str = "results"
    tasks_dir: str | None = None
    progress: bool = True
    reference: str = "random"
    device: str = "auto"
    cells: list[Cell] = field(default_factory=list)


def request(grid: Grid, method: str, task: str) -> Any:
    """The ``RunRequest`` of one cell."""
    from harness.dispatch.runner import RunRequest

    return RunRequest(method=method, task=task, fraction=grid.fraction, seed=grid.seed, profile=grid.profile,
                      data_root=grid.data_root, results_dir=grid.results_dir, progress=grid.progress,
                      tasks_dir=grid.tasks_dir, device=grid.device)


def run_cell(grid: Grid, method: Any, name: str, task: Any) -> Cell:
    """Run one (method, task) through ``runner.execute``; a refusal or failure is a cell, not an exception."""
    from harness.dispatch.failures import expected_types
    from harness.dispatch.outcomes import capability_refusal
    from harness.dispatch.runner import execute

    lacking = capability_refusal(method, task)
    if lacking:
        return Cell(name, task.name, "not capable", why=lacking)
    try:
        out = execute(request(grid, name, task.name))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one cell failing stops no other (hours of runs on the powered world)
        status = "refused" if isinstance(exc, expected_types()) else "failed"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Cell(name, task.name, status, why=f"{type(exc).__name__}: {first}")
    # the record as written (with its predictions file's name, which the paired bootstrap reads)
    return Cell(name, task.name, "done", record=json.loads(out.path.read_text()), path=out.path)


def pair_with_reference(grid: Grid, cells: list[Cell]) -> None:
    """Fill each done cell's ``paired``: the paired bootstrap of its main metric minus the reference row's.

    The leaderboard's own comparison (``harness.reporting.pairing.Pairing``: the same patient
    resamples for both runs, from the predictions every record keeps).
    """
    from harness.reporting.pairing import Pairing

    done = [c for c in cells if c.status == "done"]
    reference = next((c for c in done if c.method == grid.reference), None)
    for cell in done:
        if cell.method == grid.reference:
            continue
        if reference is None:
            cell.paired = f"no {grid.reference} run"
            continue
        main = cell.record["main_metric"]
        kept_none = [c.method for c in (cell, reference) if not c.record.get("predictions_file")]
        if kept_none:  # the protocol keeps no per-unit values of its main metric: nothing to resample
            cell.paired = (f"the {' and '.join(kept_none)} run{'s' if len(kept_none) > 1 else ''} kept no per-unit "
                           f"values of {main}")
            continue
        pairing = Pairing(grid.results_dir, main, {cell.method: [cell.record], grid.reference: [reference.record]})
        cell.paired = pairing.compare(cell.method, grid.reference)
