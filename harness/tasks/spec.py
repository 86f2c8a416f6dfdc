"""What a task file holds: ``TaskSpec`` and its parts, frozen dataclasses with their defaults.

Every cohort choice is a field here, so every cohort choice is visible in the file;
``version`` is bumped on any change that moves numbers. Reading a file into these
(``harness.tasks.loading``) and checking one against the datasets and protocols
(``harness.tasks.checks``) live next to this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class TaskSpecError(ValueError):
    """A task file that does not validate; the message names file and key."""


@dataclass(frozen=True)
class LabelPolicy:
    """How 1 / 0 / -1 (uncertain) / NaN (blank) become training targets.

    ``uncertain`` and ``blank`` are ``zero``, ``one`` or ``ignore`` (masked out of
    the loss and the metrics for that label); ``per_label`` overrides
    ``uncertain`` for named labels (GLoRIA's U-Ones / U-Zeros per label).
    """

    uncertain: str = "zero"
    blank: str = "zero"
    per_label: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    """``official`` uses the dataset's split; ``patient-hash`` assigns by a hash of
    the patient id where no (or no validation) split exists.

    ``on_leak`` says what a patient in two of the task's train / val / test splits does
    (an official split that is not patient-disjoint: a damaged or edited split file):
    ``error`` (the default) refuses the run with one line naming the split file(s), the
    patient and the splits; ``drop`` keeps that patient's rows only in its most held-out
    split (test > val > train) and counts the removed rows in the record's ``skipped``.
    Set ``drop`` only in a task whose source says the official split is to be used as is.
    """

    method: str = "official"
    # which official split serves as the test set ("val" for CheXpert's valid.csv); with
    # eval_dataset set, the split of THAT dataset used as test
    test_split: str = "test"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    salt: str = "harness-v1"
    on_leak: str = "error"  # error | drop (see the docstring)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    description: str
    source: str  # where the protocol comes from (paper, section), and harness choices
    dataset: str  # train / validation data
    protocol: str
    main_metric: str
    metrics: tuple[str, ...]
    requires: tuple[str, ...] = ("image",)
    eval_dataset: str | None = None  # test data from another dataset (e.g. chexpert-ext)
    views: tuple[str, ...] | None = None  # None: every view
    labels: tuple[str, ...] = ()
    label_policy: LabelPolicy = field(default_factory=LabelPolicy)
    split: SplitSpec = field(default_factory=SplitSpec)
    fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    protocol_args: dict[str, Any] = field(default_factory=dict)
    profile_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> arg overrides
    path: str = ""  # the file it was loaded from (set by the loader)

    def args_for(self, profile: str) -> dict[str, Any]:
        """Protocol arguments with the profile's overrides applied."""
        return {**self.protocol_args, **self.profile_args.get(profile, {})}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


SPLIT_NAMES = ("train", "val", "test")
SPLIT_METHODS = ("official", "patient-hash")
ON_LEAK = ("error", "drop")
