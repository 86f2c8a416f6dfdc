"""Protocols refuse what they cannot measure (issue 21, item 6): precision@5 over 5 candidates, a 1k block over
fewer pairs, recall@K with K >= the gallery, an AUROC label without a test positive, a bootstrap over too few
patients. Each either refuses in one line or reports the metric as not measurable (NaN, with the reason in the
record's details, "n/m" in a table): never a number that means nothing."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from test_classification_support import LABELS, TinyEncoder
from test_classification_support import context as cls_context
from test_classification_support import task_data as cls_task_data
from test_imagetext_support import JointEncoder, context, make_records, task_data, toy_task
from test_localization import LOC_TASK, boxes_for

from harness import metrics
from harness.protocols import linear_probe, localization, retrieval
from harness.protocols.errors import ProtocolError
from harness.reporting.leaderboard import render_task
from tests.corpus import cli_error

ROOT = Path(__file__).resolve().parent.parent


def _task_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A tasks folder holding one task file of the repository with one line changed."""
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    text = (ROOT / "tasks" / f"{name}.yaml").read_text()
    assert old in text
    (folder / f"{name}.yaml").write_text(text.replace(old, new))
    return folder


def test_precision_at_5_over_a_gallery_of_5_is_refused(corpus_world, tmp_path, capsys):
    # one study per class: 5 candidates, so Precision@5 is 1/5 and Hit@5 is 1 for every encoder
    tasks = _task_copy(tmp_path, "mimic-5x200", "smoke: {per_class: 2,", "smoke: {per_class: 1,")
    line = cli_error(["-q", "run", "--method", "random", "--task", "mimic-5x200", "--profile", "smoke", "--data-root",
                      str(corpus_world), "--results", str(tmp_path / "r"), "--tasks-dir", str(tasks)], capsys)
    assert line == ("harness: error: retrieval: the main metric i2t_prec5 is not measurable: K = 5 is not below the "
                    "5 candidates (every encoder retrieves them all), on a gallery of 5 items")
    assert not list((tmp_path / "r").rglob("*.json"))  # nothing half-written


def test_a_1k_block_over_fewer_pairs_is_refused(corpus_world, tmp_path, capsys):
    tasks = _task_copy(tmp_path, "mimic-retrieval-1k", "smoke: {block: 16,", "smoke: {block: 100000,")
    line = cli_error(["-q", "run", "--method", "random", "--task", "mimic-retrieval-1k", "--profile", "smoke",
                      "--data-root", str(corpus_world), "--results", str(tmp_path / "r"), "--tasks-dir", str(tasks)],
                     capsys)
    assert re.fullmatch(r"harness: error: retrieval: block 100000 needs at least 100000 test pairs; the test gallery "
                        r"has (\d+) \(R-100000 over \1 pairs would not be R-100000\)", line), line


def test_recall_at_k_not_below_the_gallery_is_not_measurable(tmp_path):
    data = task_data(task=toy_task(views=None, metrics=("i2t_r1", "i2t_r10", "t2i_r1"), main_metric="i2t_r1"),
                     n_studies=40)  # 8 test studies: a gallery of 8
    result = retrieval.run(context(data, JointEncoder(), tmp_path, args={"n_bootstrap": 50}))
    n = result.details["n_texts"]
    assert n < 10 and math.isnan(result.metrics["i2t_r10"]) and not math.isnan(result.metrics["i2t_r1"])
    assert result.details["not_measurable"]["i2t_r10"] == (f"not measurable: K = 10 is not below the {n} candidates "
                                                           "(every encoder retrieves them all)")
    assert "i2t_r10" not in result.ci
    # r_mean averages every recall: as the main metric, the run is refused and says which
    data.task = toy_task(views=None)
    with pytest.raises(ProtocolError, match=r"the main metric r_mean is not measurable: it averages \['i2t_r10', "
                                            r"'t2i_r10'\], which are not, on a gallery of \d+ images and \d+ texts"):
        retrieval.run(context(data, JointEncoder(), tmp_path, args={"n_bootstrap": 50}))


def test_an_auroc_label_without_a_test_positive_is_left_out_and_named(tmp_path):
    data = cls_task_data()
    test = dataclasses.replace(data.test, targets=data.test.targets.copy())
    test.targets[:, 0] = np.where(np.isnan(test.targets[:, 0]), np.nan, 0.0)  # no Atelectasis in test
    data = dataclasses.replace(data, test=test)
    result = linear_probe.run(cls_context(data, TinyEncoder(), tmp_path, {"l2_grid": [1e-2], "bootstrap": 50}))
    d = result.details
    per_label = d["auroc_per_label"]
    assert math.isnan(per_label["Atelectasis"]) and d["skipped_labels"] == ["Atelectasis"]
    assert d["not_measurable"]["labels"] == {"Atelectasis": "no positive in test"}
    assert d["not_measurable"]["note"] == "auroc_macro and auprc_macro average the other 2 of 3 labels"
    assert result.metrics["auroc_macro"] == pytest.approx(np.mean([per_label[n] for n in LABELS[1:]]))
    # F1 macro's rule: the label without a test positive is left out (and listed), the others at val thresholds
    assert d["f1_skipped_labels"] == ["Atelectasis"] and d["f1_rule"] == metrics.scoring.F1_RULE
    y, s = result.predictions["targets"], result.predictions["scores"]
    t = [d["f1_thresholds"][n] for n in LABELS]
    per_label = [f1_score(y[~np.isnan(y[:, j]), j], s[~np.isnan(y[:, j]), j] >= t[j]) for j in (1, 2)]
    assert result.metrics["f1_macro"] == pytest.approx(np.mean(per_label))  # scikit-learn on the other two


def test_no_label_measurable_is_nan_and_said_not_a_number(tmp_path, capsys):
    data = cls_task_data()
    test = dataclasses.replace(data.test, targets=np.zeros_like(data.test.targets))  # no positive at all
    result = linear_probe.run(cls_context(dataclasses.replace(data, test=test), TinyEncoder(), tmp_path,
                                          {"l2_grid": [1e-2], "bootstrap": 50}))
    assert math.isnan(result.metrics["auroc_macro"]) and "auroc_macro" not in result.ci
    assert result.details["not_measurable"]["auroc_macro"].startswith("not measurable: no label has both classes")
    assert result.details["not_measurable"]["f1_macro"].startswith("not measurable: no label has a positive")


def test_a_bootstrap_over_too_few_patients_gives_no_interval(tmp_path):
    rng = np.random.default_rng(0)
    y, s = (rng.random(40) < 0.5).astype(float), rng.random(40)
    four = np.repeat(["a", "b", "c", "d"], 10)
    ci = metrics.bootstrap_ci(metrics.auroc_macro, y, s, groups=four, n=100, seed=0)
    assert math.isnan(ci.lo) and math.isnan(ci.hi) and ci.n_resamples == 0
    assert ci.reason == "not measurable: 4 patient(s), a bootstrap interval needs at least 5"
    assert ci.estimate == pytest.approx(metrics.auroc_macro(y, s))
    five = np.repeat(["a", "b", "c", "d", "e"], 8)
    assert not metrics.bootstrap_ci(metrics.auroc_macro, y, s, groups=five, n=100, seed=0).reason
    paired = metrics.paired_bootstrap(metrics.auroc_macro, y, s, 1 - s, four, n=100)
    assert math.isnan(paired.lo) and paired.reason.startswith("not measurable: 4 patient(s)")

    # a protocol says so in the record and leaves the CI out
    records, images = make_records(n_studies=30)  # 3 test patients
    data = task_data(task=LOC_TASK, records=records, images=images)
    data.extras["boxes"] = boxes_for(data)
    result = localization.run(context(data, JointEncoder(), tmp_path, args={"n_bootstrap": 50}))
    assert result.ci == {} and result.metrics["pointing_game"] == 1.0
    assert result.details["not_measurable"]["ci of pointing_game"].startswith("not measurable: 3 patient(s)")


def test_a_not_measurable_main_metric_is_n_m_in_the_table(tmp_path, capsys):
    from tests.test_results import make_record

    recs = [make_record(0, method="a", metrics={"auroc_macro": math.nan}, weights_sha256="a" * 64),
            make_record(0, method="b", metrics={"auroc_macro": 0.7}, ci={"auroc_macro": [0.6, 0.8]},
                        weights_sha256="b" * 64)]
    text = render_task("t", "synthetic", recs)
    assert "| a | n/m |" in text and "| b | 0.7000 [0.6000, 0.8000] (bootstrap) |" in text
    assert text.index("| b |") < text.index("| a |")
    # the run summary says "not measurable" instead of printing nan
    from harness.cli.commands import _print_outcome

    _print_outcome({**recs[0], "main_metric": "auroc_macro"}, tmp_path / "a.json")
    out = capsys.readouterr().out
    assert "auroc_macro = not measurable (the record's details say why)" in out and "nan" not in out
