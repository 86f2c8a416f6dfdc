"""``CheckReport``: what ``harness check`` says about one dataset root, without training anything.

Every adapter's ``check(root)`` returns one. Its counts are aggregate, never
report text; its problem lines name the user's own local files (file, row, field)
and, for a split that is not patient-disjoint, the first patient concerned, as a
run's refusal would. It is printed to the user and never stored in a result record.

``decode_images`` then decodes every image of the report with the decoder runs use
(``harness.data.images.decode_image``), behind a progress bar, and adds the
unreadable ones as problems: a run would drop them (counted), a check says which.

Example::

    report = ADAPTER.check(Path("/data"))
    decode_images(report)
    print(report.render())
    if not report.ok:
        raise SystemExit(2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.schema import DataError, Records

DECODE_SIZE = 32  # decoding at a small size is enough to prove a file readable (JPEGs decode in DCT draft mode)
PARALLEL_FROM = 2000  # images; below this, worker processes cost more to start than they save
SHOWN_UNREADABLE = 5  # unreadable files named one by one; the rest are counted


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
        skipped: counted skip reasons, as in ``Records.skipped`` (rows or values removed).
        warnings: counted warnings, as in ``Records.warnings`` (rows kept but suspicious).
        problems: ``"file:row: field: message"`` strings; non-empty means the data would not load cleanly.
        notes: free-form, non-identifying facts (version found, optional files present, ...).
        counts: any other aggregate counts, by title (e.g. ``{"images": {"all": 12}}``).
        image_paths: the files ``decode_images`` decodes (the records' paths; not rendered).
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
    warnings: dict[str, int] = field(default_factory=dict)
    image_paths: list[str] = field(default_factory=list, repr=False)

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
            rep.warnings = dict(loaded.warnings)
            rep.image_paths = frame["path"].astype(str).tolist()
            rep.notes = [*(str(n) for n in loaded.extras.get("notes", [])), *extra_notes]
        return rep

    @property
    def ok(self) -> bool:
        """Present and without problems (counted skips and warnings are allowed: the data is usable)."""
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
                                  ("labels (positives)", self.labels), *self.counts.items()):
                if counts:
                    body = ", ".join(f"{k or '<none>'}={v}" for k, v in counts.items())
                    lines.append(f"  {title}: {body}")
            # one line per reason, worded like the run summary (`harness run` prints the same lines)
            lines.extend(f"  skipped {n}: {reason}" for reason, n in self.skipped.items())
            lines.extend(f"  warning {n}: {reason}" for reason, n in self.warnings.items())
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def decode_images(report: CheckReport, *, size: int = DECODE_SIZE, workers: int | None = None,
                  progress: bool = True) -> None:
    """Decode every image of ``report`` as a run would; add the unreadable ones to its problems.

    Args:
        report: a report from an adapter's ``check`` (its ``image_paths``); nothing happens without paths.
        size: decoded side in pixels (small: the point is whether the file decodes at all).
        workers: decoding processes; None: one per core (at most 8) from ``PARALLEL_FROM`` images, else 0.
        progress: show a progress bar.
    """
    from harness.data.images import decode_results
    from harness.progress import progress as progress_bar

    paths = report.image_paths
    if not paths:
        return
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(paths) >= PARALLEL_FROM else 0
    unreadable: list[str] = []
    bar = progress_bar(len(paths), f"decoding {report.dataset} images", unit="img", enabled=progress)
    try:
        for path, reason in zip(paths, decode_results(paths, size, workers), strict=True):
            if reason:
                unreadable.append(f"{path}: {reason}")
            bar.update(1)
    finally:
        bar.close()
    report.counts["images decoded"] = {"readable": len(paths) - len(unreadable), "unreadable": len(unreadable)}
    if unreadable:
        report.problems.append(f"{len(unreadable)} of {len(paths)} image(s) cannot be decoded (a run removes them, "
                               f"counted); the first {min(len(unreadable), SHOWN_UNREADABLE)}:")
        report.problems.extend(f"unreadable image: {u}" for u in unreadable[:SHOWN_UNREADABLE])
