"""``supervised``: the label-supervised reference row. It learns from the task's TRAINING labels only (the
images it reads belong to training patients, never a validation or test one), its pretraining is keyed
by the task's labels, its record says so, the leaderboard never ranks it, and it refuses tasks without
labels."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.cohort import training_data
from harness.data.images import ImageView
from harness.dispatch.outcomes import capability_refusal
from harness.dispatch.pretraining import pretraining_key
from harness.dispatch.runner import RunRequest, load_method, prepare
from harness.encoders import PretrainRequest
from harness.tasks import get_task

SQUARE_ONLY = """\
name: mock-square
version: 1
description: the mock task with one of its two labels (test only)
source: harness design (tests only)
dataset: mock
protocol: linear-probe
requires: [image]
labels: [Square]
label_policy: {uncertain: zero, blank: zero}
split: {method: patient-hash, val_fraction: 0.2, test_fraction: 0.3, salt: mock-v1}
fractions: [1.0]
seeds: [0]
metrics: [auroc_macro, auroc_micro, auprc_macro]
main_metric: auroc_macro
protocol_args: {}
"""


class RecordingStore:
    """An image store that remembers every row read from it (what a method actually looked at)."""

    def __init__(self, store) -> None:
        self.store, self.read = store, set()

    def __getitem__(self, idx):
        self.read.update(int(i) for i in np.atleast_1d(idx))
        return self.store[idx]

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture(scope="module")
def mock_oracle():
    return prepare(RunRequest(method="supervised", task="mock", profile="smoke", progress=False))


def patients_of(data, split: str) -> pd.Series:
    """store row -> patient id, for one split of the cohort."""
    part = data.split(split)
    return pd.Series(part.frame["patient_id"].astype(str).to_numpy(), index=part.images.rows)


def test_the_oracle_reads_only_training_patients(mock_oracle, tmp_path: Path):
    p = mock_oracle
    train = p.pretraining_data()
    assert train.labels is not None and train.labels.task == "mock" and train.labels.names == ("Square", "Bar")
    np.testing.assert_array_equal(train.labels.targets, p.data.train.targets)  # the training rows' labels, aligned
    recorder = RecordingStore(train.images.store)
    train = dataclasses.replace(train, images=ImageView(recorder, train.images.rows))
    request = PretrainRequest(data=train, config=dict(p.config), workdir=tmp_path, seed=0, device="cpu",
                              progress=False)
    checkpoint = p.method.pretrain(request)

    read = patients_of(p.data, "train").reindex(sorted(recorder.read))
    assert read.notna().all(), "the oracle read an image that is not in the training split"
    trained_on = set(read)
    held_out = set(patients_of(p.data, "val")) | set(patients_of(p.data, "test"))
    assert trained_on and not trained_on & held_out
    assert trained_on <= set(patients_of(p.data, "train"))
    # the patients held out to choose the checkpoint are training patients, all measured, none fitted
    from baselines.supervised.pretrain import inner_split

    inner = inner_split(train.frame["patient_id"], p.method.config(p.config).val_fraction, 0)
    inner_patients = set(train.frame["patient_id"].astype(str)[inner])
    assert inner_patients and inner_patients <= trained_on

    meta = json.loads((tmp_path / "run.json").read_text())["meta"]
    counts = meta["data"]
    assert counts["fitted_patients"] + counts["held_out_patients"] == train.frame["patient_id"].nunique()
    assert counts["held_out_patients"] == len(inner_patients)
    assert counts["fitted_images"] + counts["held_out_images"] == len(train.frame)
    assert meta["labels"] == {"task": "mock", "task_version": 1, "names": ["Square", "Bar"],
                              "fingerprint": train.labels.fingerprint}
    # the chosen checkpoint is the step with the lowest held-out loss among the measurements
    lines = [json.loads(line) for line in (tmp_path / "selection.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    best = min(lines, key=lambda line: line["held_out_loss"])
    from baselines.common.train import load_checkpoint

    assert Path(checkpoint).name == "best.pt" and load_checkpoint(checkpoint)["step"] == best["step"]
    encoder = p.method.load(checkpoint, dict(p.config))
    assert encoder.card.uses_labels and "{task}" in encoder.card.pretraining_data


def test_a_self_supervised_method_is_never_offered_labels(mock_oracle):
    assert training_data(mock_oracle.data).labels is None
    moco = prepare(RunRequest(method="moco", task="mock", profile="smoke", progress=False))
    assert moco.pretraining_data().labels is None


def test_the_pretraining_key_names_the_task_labels(mock_oracle, tmp_path: Path):
    """Same training rows, another label set: another pretraining, never the first one's checkpoint."""
    (tmp_path / "mock-square.yaml").write_text(SQUARE_ONLY)
    square = prepare(RunRequest(method="supervised", task="mock-square", tasks_dir=str(tmp_path), profile="smoke",
                                progress=False))
    both, one = mock_oracle.pretraining_data(), square.pretraining_data()
    assert both.fingerprint == one.fingerprint  # the very same training rows and pixels ...
    key_both = pretraining_key(mock_oracle.method, mock_oracle.config, both)
    key_one = pretraining_key(square.method, square.config, one)
    assert key_both != key_one  # ... but not the same labels
    assert key_both == pretraining_key(mock_oracle.method, mock_oracle.config, mock_oracle.pretraining_data())
    # a method that does not learn from labels keys by rows and config alone, as before
    unlabelled = dataclasses.replace(both, labels=None)
    assert pretraining_key(mock_oracle.method, mock_oracle.config, unlabelled) != key_both


def test_oracle_end_to_end_and_the_leaderboard_never_ranks_it(tmp_path: Path, capsys):
    results, tasks = tmp_path / "results", tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mock-square.yaml").write_text(SQUARE_ONLY)
    (tasks / "mock.yaml").write_text((Path(__file__).parent.parent / "tasks" / "mock.yaml").read_text())
    common = ["--profile", "smoke", "--results", str(results), "--tasks-dir", str(tasks)]
    for method in ("supervised", "random", "pixels"):
        assert main(["-q", "run", "--method", method, "--task", "mock", *common]) == 0, capsys.readouterr().err[-2000:]
    def oracle_records() -> dict[str, dict]:
        found = [json.loads(p.read_text()) for p in results.rglob("*.json")]
        return {r["task"]: r for r in found if r["method"] == "supervised"}

    first = oracle_records()["mock"]
    assert main(["-q", "run", "--method", "supervised", "--task", "mock", *common]) == 0  # again: cached
    again = oracle_records()["mock"]
    assert (first["pretrain"]["cache_hit"], again["pretrain"]["cache_hit"]) == (False, True)
    assert again["pretrain"]["cache_key"] == first["pretrain"]["cache_key"]
    # the same training rows with another label set: trained anew, under another key
    assert main(["-q", "run", "--method", "supervised", "--task", "mock-square", *common]) == 0
    square = oracle_records()["mock-square"]
    assert not square["pretrain"]["cache_hit"] and square["pretrain"]["cache_key"] != first["pretrain"]["cache_key"]
    records = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    for r in oracle_records().values():
        assert r["method_card"]["uses_labels"] is True and r["data_source"] == "synthetic"
        assert r["method_card"]["labels_from"] == {"task": r["task"], "task_version": 1, "split": "train",
                                                   "labels": r["config"]["labels"]}
    assert not any(r["method_card"]["uses_labels"] for r in records if r["method"] != "supervised")

    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    table = (tmp_path / "lb" / "synthetic" / "mock.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| method")]
    names = [row.split(" | ")[0][2:] for row in rows]
    # the oracle comes last, marked, and is never the best nor compared as one; the others are ranked among
    # themselves (the ordering whatever the numbers: tests/test_leaderboard_statistics.py)
    assert names[-1] == "supervised (uses labels)" and "not ranked (uses labels)" in rows[-1]
    assert sum("| best |" in row for row in rows) == 1 and "| best |" not in rows[-1]
    assert {"random", "pixels"} <= set(names[:-1])


@pytest.mark.parametrize("argv, message", [
    (["--task", "mimic-regen"], "learns from the task's training labels, and task 'mimic-regen' has none"),
    (["--task", "mock", "--pretrain-on", "mimic-cxr"], "--pretrain-on mimic-cxr does not apply to it"),
    (["--task", "mimic-retrieval"], "lacks capability ['text']"),
])
def test_refusals_are_one_line(argv: list[str], message: str, capsys):
    assert main(["run", "--method", "supervised", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_sweep_refuses_the_oracle_on_a_task_without_labels():
    why = capability_refusal(load_method("supervised"), get_task("openi-regen"))
    assert "has none (labels: [])" in why
    assert capability_refusal(load_method("supervised"), get_task("mimic-cls")) == ""
    assert capability_refusal(load_method("pixels"), get_task("openi-regen")) == ""
