"""The bench report: one summary row per figure, a section per figure, rendered as markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.bench.profiles import BenchProfile


@dataclass
class Figure:
    """One row of the summary table."""

    key: str
    what: str
    measured: str
    ratio: float | None = None
    target: str = ""
    holds: bool | None = None


@dataclass
class Report:
    """The figures measured so far, and the report section of each, in order."""

    profile: BenchProfile
    figures: list[Figure] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def add(self, figure: Figure, section: str) -> None:
        self.figures.append(figure)
        self.sections.append(section)


def render(report: Report, info: dict[str, Any], load_end: tuple[float, ...], total_s: float) -> str:
    """The markdown report: the machine and its load, the summary table, then one section per figure.

    Args:
        report: the figures and their sections.
        info: ``harness.bench.measure.machine()`` at the start.
        load_end: the load average at the end.
        total_s: the whole bench's wall time.

    Returns:
        The markdown text (no trailing newline).
    """
    p = report.profile
    lines = [f"# harness bench ({p.name})", "",
             f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch "
             f"{info['torch']} with {info['torch_threads']} thread(s), Python {info['python']}. Load average "
             f"(1/5/15 min) at start {_load(info['load'])}, at end {_load(load_end)}: other processes share the "
             "cores, so the ratios (both sides measured alternately in one process) matter more than the "
             f"absolute rates. Total bench time {total_s:.0f} s.", ""]
    if p.name == "quick":
        lines += ["**Quick mode**: every size is reduced (stated per figure); numbers are for checking that the "
                  "bench runs, not for conclusions.", ""]
    lines += ["| figure | what | measured (harness vs baseline) | ratio | target | holds |",
              "|---|---|---|---|---|---|"]
    for f in report.figures:
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        holds = "" if f.holds is None else ("yes" if f.holds else "**no**")
        lines.append(f"| {f.key} | {f.what} | {f.measured} | {ratio} | {f.target} | {holds} |")
    lines.append("")
    for f, text in zip(report.figures, report.sections, strict=True):
        lines += [f"## {f.key}: {f.what}", "", text, ""]
    return "\n".join(lines)


def _load(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.2f}" for v in values)
