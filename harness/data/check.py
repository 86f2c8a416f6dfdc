"""``CheckReport``: what ``harness check`` says about one dataset root, without training anything.

Every adapter's ``check(root)`` returns one. It is aggregate only (counts and
file/row/field problems), never report text or patient identifiers, so it can
be printed and logged freely (MIMIC DUA; CheXpert research use agreement).

Example::

    report = ADAPTER.check(Path("/data"))
    print(report.render())
    if not report.ok:
        raise SystemExit(1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.data.schema import DataError, Records


@dataclass
class CheckReport:
    """The result of checking one dataset root.

    Attributes:
        dataset: adapter name (``mimic-cxr``, ``chexpert``, ...).
        root: the root that was checked.
        present: False when the dataset's layout is not there at all (nothing else is meaningful then).
        splits: images per split (``train`` / ``val`` / ``test`` / ``""``).
        views: images per normalised view.
        labels: per label name, the count of positive (1.0) values at image level.
        skipped: counted skip reasons, as in ``Records.skipped``.
        problems: ``"file:row: field: message"`` strings; non-empty means the data would not load cleanly.
        notes: free-form, non-identifying facts (version found, optional files present, ...).
        counts: any other aggregate counts, by title (e.g. ``{"images": {"all": 12}}``).
    """

    dataset: str
    root: Path
    present: bool
    splits: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_load(cls, dataset: str, root: Path, present: bool, loaded: Records | DataError | None,
                  extra_notes: tuple[str, ...] = ()) -> CheckReport:
        """A report from one load attempt: counts of the records, or the error as the problem."""
        rep = cls(dataset, root, present)
        if isinstance(loaded, DataError):
            rep.problems.append(str(loaded))
        elif isinstance(loaded, Records):
            frame = loaded.frame
            rep.splits = {k: int(v) for k, v in frame["split"].value_counts().sort_index().items()}
            rep.views = {k: int(v) for k, v in frame["view"].value_counts().sort_index().items()}
            rep.labels = {n: int((frame[n] == 1.0).sum()) for n in loaded.label_names}
            rep.skipped, rep.problems = dict(loaded.skipped), list(loaded.problems)
            rep.notes = [*(str(n) for n in loaded.extras.get("notes", [])), *extra_notes]
        return rep

    @property
    def ok(self) -> bool:
        """Present and without problems (counted skips are allowed: they are documented behaviour)."""
        return self.present and not self.problems

    @property
    def n_images(self) -> int:
        return sum(self.splits.values())

    def render(self) -> str:
        """A short human-readable block, one fact per line."""
        status = "ok" if self.ok else ("NOT FOUND" if not self.present else "PROBLEMS")
        lines = [f"{self.dataset}: {status} ({self.root})"]
        if self.present:
            if self.splits:
                lines.append(f"  images: {self.n_images}")
            for title, counts in (("splits", self.splits), ("views", self.views),
                                  ("labels (positives)", self.labels), ("skipped", self.skipped),
                                  *self.counts.items()):
                if counts:
                    body = ", ".join(f"{k or '<none>'}={v}" for k, v in counts.items())
                    lines.append(f"  {title}: {body}")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)
