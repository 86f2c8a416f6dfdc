"""The data a task reads: its data root, the world that root names, one dataset's records under it.

The run, the sweep's ``--skip-existing`` and the capability checks all resolve a task's data the
same way, through these three::

    root = task_data_root(task, data_root)   # a DataRoot, or the self-contained one (the unit-test mock)
    world = data_world(root)                 # what a record names: the synthetic world, "real", ...
    records = load_records("mimic-cxr", root)

A dataset whose adapter writes its own files (``needs_data_root = False``: the unit-test
``mock``) needs no data root: such a task neither generates the default synthetic world nor
reads ``--data-root``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.catalog import DATASETS
from harness.data.roots import resolve_data_root
from harness.data.schema import DataError, Records


class SelfContainedRoot:
    """The data root of a task whose datasets write themselves (the unit-test ``mock``)."""

    path: Path | None = None
    data_source = "synthetic"

    def source_present(self, name: str) -> bool:
        return True


def needs_data_root(task: Any) -> bool:
    """Whether any dataset of ``task`` (its dataset and eval_dataset) reads a data root."""
    return any(getattr(DATASETS.get(d), "needs_data_root", True) for d in (task.dataset, task.eval_dataset) if d)


def task_datasets(task: Any, also: tuple[str | None, ...] = ()) -> tuple[str, ...]:
    """The datasets ``task`` reads (its dataset, eval_dataset, and ``also``: e.g. ``--pretrain-on``)."""
    return tuple(dict.fromkeys(d for d in (task.dataset, task.eval_dataset, *also) if d))


def task_data_root(task: Any, data_root: str | Path | None, also: tuple[str | None, ...] = ()) -> Any:
    """The resolved data root of ``task`` (``harness.data.roots.resolve_data_root``), or the self-contained one.

    On the default synthetic world only the sources of ``task_datasets(task, also)`` are generated
    (a first ``mimic-cls`` run writes the MIMIC part, a later ``nih14-cls`` run adds NIH-14).

    Raises:
        DataError: the data root does not resolve (see ``resolve_data_root``).
    """
    if not needs_data_root(task):
        return SelfContainedRoot()
    return resolve_data_root(data_root, datasets=task_datasets(task, also))


def data_world(root: Any) -> dict[str, Any] | str:
    """A record's ``world``: the synthetic world's identity (``harness.synth.world_identity``),
    ``"real"``, or ``"self-contained"`` for a task whose datasets write themselves (``mock``)."""
    if root.data_source == "real":
        return "real"
    if root.path is None:
        return "self-contained"
    from harness.synth import world_identity

    return world_identity(root.path)


def load_records(dataset: str, root: Any) -> Records:
    """The adapter's records of ``dataset`` under the resolved data root.

    Raises:
        DataError: the dataset is not under the root, or its files do not load (file, row, field).
    """
    adapter = DATASETS.get(dataset)
    if not root.source_present(dataset):
        raise DataError(f"dataset {dataset!r} is not under the data root {root.path} "
                        f"(see `python -m harness data check {dataset} --root DIR`)")
    return adapter.load(root.path, data_source=root.data_source)
