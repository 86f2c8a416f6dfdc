"""``MethodCard``: what a leaderboard needs to know about a method or a submission.

A card travels with every encoder (``encoder.card``) and into every result record
(``method_card``): the paper (or "harness design", saying what is a harness choice),
how images must be prepared (``Preprocess``), what data the weights saw in pretraining
(so a leaderboard can flag pretraining on a task's evaluation data), what the encoder
it loads can do (checked against a task's ``requires`` before any work) and whether it
learnt from the task's labels (``uses_labels``: a supervised reference row, never ranked
with the self-supervised ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.encoders.preprocess import Preprocess


@dataclass(frozen=True)
class MethodCard:
    """What a leaderboard needs to know about a method or submission."""

    name: str
    paper: str  # citation or "harness design"; say what is a harness choice
    preprocess: Preprocess = field(default_factory=Preprocess)
    # Datasets and splits seen in pretraining, as "dataset:split" (e.g. "mimic-cxr:train",
    # "imagenet:train"). "{task}" means "the task's own dataset, training split".
    pretraining_data: tuple[str, ...] = ()
    # What the encoder it loads can do (checked against a task's requires before any work;
    # the loaded encoder is checked again with capabilities()).
    capabilities: tuple[str, ...] = ("image", "trainable")
    notes: str = ""
    # True for a method that learns from the task's own TRAINING labels (a supervised ceiling, e.g.
    # ``supervised``): the run offers it those labels (``harness.cohort.TrainingLabels``), refuses a task
    # without labels, keys its pretraining by the task's label set and split, and the record and the
    # leaderboard mark it so it is never mixed into the self-supervised comparisons.
    uses_labels: bool = False
