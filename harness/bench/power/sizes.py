"""How much a task measures on: its splits' images and patients, and the units its protocol scores.

Read from the task's own data code on the world the runs use: ``runner.prepare`` builds the cohort
(``harness.cohort.build_task_data``), and the protocol's own functions say what it scores on
(``retrieval.build_gallery`` for the pairs gallery and its R-1k blocks, ``retrieval.sample_5x200``'s
candidates for the class gallery, ``localization.check_boxes`` for the boxed test images,
``max_test`` for regeneration). Nothing here runs an encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class TaskSizes:
    """The sizes of one task's cohort (``images``/``patients`` per split) and of what its protocol scores.

    ``units`` are protocol-specific counts (name -> int), ``note`` a one-line summary of them, and
    ``problem`` why the protocol would refuse this data (empty when it would not), all in plain words.
    """

    task: str
    protocol: str
    images: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    note: str = ""
    problem: str = ""


def task_sizes(data: Any, args: dict[str, Any]) -> TaskSizes:
    """The sizes of ``data`` (a ``harness.cohort.TaskData``) for its task's protocol with resolved ``args``.

    Args:
        data: the task's cohort, as a run builds it.
        args: the protocol arguments for the run's profile, defaults filled in
            (``harness.protocols.args.declared(protocol).resolve``).

    Returns:
        The split sizes and the protocol's units (see ``TaskSizes``).
    """
    task = data.task
    sizes = TaskSizes(task=task.name, protocol=task.protocol)
    for name in SPLITS:
        split = data.split(name)
        sizes.images[name] = len(split)
        sizes.patients[name] = int(split.frame["patient_id"].astype(str).nunique())
    unit_counts = _UNITS.get(task.protocol, _labelled)
    unit_counts(data, args, sizes)
    return sizes


def _labelled(data: Any, args: dict[str, Any], sizes: TaskSizes) -> None:
    """Classification: the labels an AUROC is defined for (a test positive and a test negative)."""
    targets = data.test.targets
    if targets.shape[1] == 0:
        return
    measurable = int(((targets == 1).any(0) & (targets == 0).any(0)).sum())
    sizes.units = {"labels": int(targets.shape[1]), "labels_measurable": measurable}
    sizes.note = f"{measurable} of {targets.shape[1]} labels with a test positive and a test negative"


def _retrieval(data: Any, args: dict[str, Any], sizes: TaskSizes) -> None:
    from harness.protocols.retrieval import build_gallery

    if args["mode"] == "class-5x200":
        _class_gallery(data, args, sizes, build_gallery)
        return
    gallery, _ = build_gallery(data.test.frame, "test", list(args["text_sections"]), args["gallery"])
    pairs, images = len(gallery.texts), len(gallery.split_rows)
    sizes.units = {"gallery_images": images, "gallery_texts": pairs}
    sizes.note = f"gallery of {images} test images and {pairs} reports"
    if args["block"] is not None:
        block = int(args["block"])
        blocks = pairs // block
        sizes.units.update(block=block, blocks=blocks, pairs_outside_blocks=pairs - blocks * block)
        sizes.note += f"; {blocks} block(s) of {block} pairs, {pairs - blocks * block} pairs left out"
        if blocks == 0:
            sizes.problem = f"fewer test pairs ({pairs}) than one block of {block}"


def _class_gallery(data: Any, args: dict[str, Any], sizes: TaskSizes, build_gallery: Any) -> None:
    """5x200: the studies whose only positive is each class, over ``pool_splits`` (``sample_5x200``'s pool)."""
    cols = [data.label_names.index(c) for c in args["classes"]]
    targets = []
    for split in args["pool_splits"]:
        part = data.split(split)
        gallery, _ = build_gallery(part.frame, split, list(args["text_sections"]), "one-per-study")
        targets.append(part.targets[gallery.split_rows][:, cols])
    positive = np.concatenate(targets) == 1.0
    single = positive.sum(1) == 1
    candidates = {c: int((single & positive[:, i]).sum()) for i, c in enumerate(args["classes"])}
    per_class = int(args["per_class"])
    sizes.units = {"per_class": per_class, "classes": len(cols), "gallery": per_class * len(cols),
                   "fewest_candidates": min(candidates.values())}
    fewest = min(candidates, key=candidates.get)
    sizes.note = (f"gallery of {len(cols)} x {per_class} = {per_class * len(cols)} studies from "
                  f"{'+'.join(args['pool_splits'])}; fewest candidates: {candidates[fewest]} ({fewest})")
    short = [f"{c} ({n})" for c, n in candidates.items() if n < per_class]
    if short:
        sizes.problem = f"fewer than per_class={per_class} single-label studies for {', '.join(short)}"


def _localization(data: Any, args: dict[str, Any], sizes: TaskSizes) -> None:
    from harness.protocols.localization import check_boxes

    boxes, _ = check_boxes(data.extras.get("boxes"))
    test_ids = set(data.test.frame["image_id"].astype(str))
    inside = boxes[boxes["image_id"].astype(str).isin(test_ids)]
    images = int(inside["image_id"].astype(str).nunique())
    cases = int(len(inside.assign(image_id=inside["image_id"].astype(str))[["image_id", "label"]].drop_duplicates()))
    sizes.units = {"box_images": images, "cases": cases}
    sizes.note = f"{images} test images with a box, {cases} (image, finding) cases"
    if images == 0:
        sizes.problem = "no test image has a box"


def _regeneration(data: Any, args: dict[str, Any], sizes: TaskSizes) -> None:
    n = len(data.test) if args["max_test"] is None else min(len(data.test), int(args["max_test"]))
    sizes.units = {"scored_images": n}
    sizes.note = f"{n} test images regenerated" + (f" (max_test {args['max_test']})" if args["max_test"] else "")


_UNITS = {"retrieval": _retrieval, "localization": _localization, "regeneration": _regeneration}
