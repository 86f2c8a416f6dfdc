"""The markdown of ``docs/power.md``: sizes, CI half-widths, paired gains and the half-width target.

Every number is copied from what was measured: sizes from ``sizes.task_sizes``, values and CIs from
the run records, paired differences from ``harness.reporting.pairing`` (see ``measure``). Nothing
is rounded before it is printed (4 decimals), and a figure that does not exist says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.bench.power.measure import Cell, Grid
from harness.bench.power.sizes import TaskSizes


@dataclass(frozen=True)
class HalfWidthTarget:
    """A CI target the document checks: the main metric's 95 % CI half-width of one (method, task) cell."""

    method: str = "imagenet"
    task: str = "mimic-cls"
    fraction: float = 1.0
    profile: str = "small"
    max_half_width: float = 0.02


TARGET = HalfWidthTarget()


def check_target(grid: Grid, profile: str, target: HalfWidthTarget = TARGET) -> tuple[str, str]:
    """``(PASS | FAIL | NOT CHECKED, the line that says it with the figure)`` for ``target`` on ``grid``'s cells."""
    what = f"{target.method} on {target.task} at {target.fraction:.0%} labels"
    cell = next((c for c in grid.cells if (c.method, c.task) == (target.method, target.task)), None)
    if cell is None:
        return "NOT CHECKED", f"NOT CHECKED: {what} is not in this grid (--methods / --tasks)"
    if grid.fraction != target.fraction:
        return "NOT CHECKED", f"NOT CHECKED: {what}: this grid ran at fraction {grid.fraction:g}"
    if cell.status != "done":
        return "NOT CHECKED", f"NOT CHECKED: {what}: {cell.status} ({cell.why})"
    main = cell.record["main_metric"]
    where = "" if profile == target.profile else (f" (the target is stated for the {target.profile} profile; "
                                                  f"this run used {profile})")
    if cell.half_width is None:
        return "FAIL", f"FAIL: {what}, profile {profile}: no 95 % CI of {main} ({cell.ci_missing()}){where}"
    verdict = "PASS" if cell.half_width <= target.max_half_width else "FAIL"
    return verdict, (f"{verdict}: {what}, profile {profile}: 95 % CI half-width of {main} = {cell.half_width:.4f} "
                     f"(target <= {target.max_half_width:g}; {main} {cell.value:.4f}, CI [{cell.ci[0]:.4f}, "
                     f"{cell.ci[1]:.4f}], {cell.record['n'].get('test', '?')} test images){where}")


def _num(x: float | None) -> str:
    return "n/m" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _paired(cell: Cell) -> str:
    p = cell.paired
    if p is None:
        return ""
    if isinstance(p, str):
        return f"n/a: {p}"
    mark = " (excludes 0)" if p.excludes_zero() else ""
    return f"{p.delta:+.4f} [{p.lo:+.4f}, {p.hi:+.4f}]{mark}"


def _split(sizes: TaskSizes, name: str) -> str:
    return f"{sizes.images[name]} ({sizes.patients[name]})"


def sizes_table(sizes: list[TaskSizes | str], tasks: list[Any]) -> list[str]:
    """One row per task: images (patients) per split, and the protocol's scored units; or why none."""
    lines = ["| task | protocol | train images (patients) | val images (patients) | test images (patients) | "
             "what the protocol scores |", "|---|---|---|---|---|---|"]
    for task, s in zip(tasks, sizes, strict=True):
        if isinstance(s, str):
            lines.append(f"| {task.name} | {task.protocol} | | | | data not built: {s} |")
            continue
        note = s.note + (f" **(refused: {s.problem})**" if s.problem else "")
        lines.append(f"| {s.task} | {s.protocol} | {_split(s, 'train')} | {_split(s, 'val')} | {_split(s, 'test')} | "
                     f"{note} |")
    return lines


def metrics_table(grid: Grid) -> list[str]:
    """One row per (task, method): the main metric, its record's 95 % CI and half-width, the paired gain."""
    lines = [f"| task | main metric | method | value | 95 % CI | half-width | minus {grid.reference} (paired, 95 %) |",
             "|---|---|---|---|---|---|---|"]
    for cell in grid.cells:
        task = next(t for t in grid.tasks if t.name == cell.task)
        if cell.status != "done":
            lines.append(f"| {cell.task} | {task.main_metric} | {cell.method} | {cell.status}: {cell.why} | | | |")
            continue
        ci = cell.ci
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"n/m: {cell.ci_missing()}"
        lines.append(f"| {cell.task} | {task.main_metric} | {cell.method} | {_num(cell.value)} | {ci_text} | "
                     f"{_num(cell.half_width)} | {_paired(cell)} |")
    return lines


def gains_table(grid: Grid) -> list[str]:
    """Regeneration tasks: each method's main metric minus the reference row's, with the paired interval."""
    regen = {t.name for t in grid.tasks if t.protocol == "regeneration"}
    cells = [c for c in grid.cells if c.task in regen and c.method != grid.reference]
    if not cells:
        return [f"No regeneration task with a method besides {grid.reference} in this grid."]
    lines = [f"| task | method | gain over {grid.reference} | 95 % paired CI | CI excludes 0 |",
             "|---|---|---|---|---|"]
    for c in cells:
        p = c.paired
        if c.status != "done" or not p or isinstance(p, str):
            why = c.why if c.status != "done" else (p or "not compared")
            lines.append(f"| {c.task} | {c.method} | n/a: {why} | | |")
            continue
        lines.append(f"| {c.task} | {c.method} | {p.delta:+.4f} | [{p.lo:+.4f}, {p.hi:+.4f}] | "
                     f"{'yes' if p.excludes_zero() else 'no'} |")
    return lines


def render(grid: Grid, sizes: list[TaskSizes | str], about: dict[str, Any]) -> str:
    """The whole document (markdown, ending in a newline).

    Args:
        grid: the grid with its measured cells (``measure``).
        sizes: per task of ``grid.tasks``, its sizes or why its data could not be built.
        about: ``command``, ``date``, ``harness``, ``commit``, ``machine``, ``device``, ``world``,
            ``data_source``, ``profile``, ``target_line``.
    """
    from harness.reporting.pairing import RESAMPLES  # scipy: not imported when the CLI only builds its parser

    synthetic = about["data_source"] == "synthetic"
    lines = ["# Statistical power: sizes and 95 % CI half-widths per task" + (" (synthetic data)" if synthetic else ""),
             ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every figure below was measured on the embedded synthetic CXR world "
                  f"({about['world']}); it says how well this benchmark separates encoders on that world, nothing "
                  "about real chest X-rays.", ""]
    lines += ["Regenerated by one command (every run goes through the ordinary runner and leaves its record under "
              "the results directory):", "", "```", about["command"], "```", "",
              f"Measured {about['date']} on {about['machine']} (device {about['device']}); harness "
              f"{about['harness']} (commit {about['commit']}); data: {about['world']}; profile {about['profile']}, "
              f"label fraction {grid.fraction:g}, seed {grid.seed}.", "",
              "## CI target", "", about["target_line"], "",
              "## Sizes", "",
              "Read from the task's own data code on the same world (`runner.prepare`, then the protocol's gallery, "
              "block, box and image counts). A split's patients are in parentheses.", "",
              *sizes_table(sizes, grid.tasks), "",
              "## Main metric and its 95 % CI", "",
              "Value and CI as the run's record holds them (a patient-level percentile bootstrap; `n_bootstrap` "
              f"resamples at the {about['profile']} profile); half-width = (high - low) / 2. The last column is the "
              f"leaderboard's paired bootstrap of the main metric minus {grid.reference}'s over the same test patients "
              f"({RESAMPLES:,} resamples). `n/m`: not measurable, with the reason.", "",
              *metrics_table(grid), "",
              "## Regeneration: an informative encoder against random features", "",
              *gains_table(grid), ""]
    return "\n".join(lines)
