"""Every task file runs end to end on a small synthetic world with the ``random`` method (smoke profile)."""

import json
import math
import os
from pathlib import Path

import pytest

from harness.cli import main
from harness.tasks import load_task, task_files

TASKS = [p.stem for p in task_files() if load_task(p).dataset != "mock"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, scale=0.3, seed=1, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_task_runs_with_random_at_smoke(task, world, tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["-q", "run", "--method", "random", "--task", task, "--profile", "smoke", "--data-root", str(world),
                 "--results", str(results)])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    [path] = list(results.rglob("*.json"))
    rec = json.loads(path.read_text())
    spec = load_task(f"tasks/{task}.yaml")
    assert rec["data_source"] == "synthetic" and rec["task_version"] == spec.version
    value = rec["metrics"][spec.main_metric]
    assert not math.isnan(value), f"{spec.main_metric} is NaN"
    assert set(spec.metrics) <= set(rec["metrics"]), sorted(set(spec.metrics) - set(rec["metrics"]))


@pytest.mark.slow
def test_pretrain_on_another_dataset_like_msn_ehr(world, tmp_path, capsys):
    """MSN+EHR pretrains on MIMIC-CXR (with its EHR) and probes NIH-14: ``--pretrain-on mimic-cxr``."""
    from harness.reporting.leaderboard import render_task

    results = tmp_path / "results"
    argv = ["-q", "run", "--method", "msn-ehr", "--task", "nih14-cls", "--profile", "smoke", "--data-root", str(world),
            "--results", str(results)]
    assert main(argv) != 0  # NIH-14 has no EHR: refused, and the message says what to do
    assert "--pretrain-on mimic-cxr" in capsys.readouterr().err
    assert not list(results.rglob("*.json"))

    assert main([*argv, "--pretrain-on", "mimic-cxr"]) == 0, capsys.readouterr().err[-2000:]
    [path] = list(results.rglob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["dataset"] == "nih14" and rec["pretrain"]["dataset"] == "mimic-cxr"
    assert not rec["pretrain"]["cache_hit"]
    done = [json.loads(p.read_text()) for p in (Path(os.environ["HARNESS_CACHE"]) / "pretrain" / "msn-ehr").rglob(
        "done.json") if rec["pretrain"]["cache_key"] in str(p)]
    assert [d["dataset"] for d in done] == ["mimic-cxr"] and done[0]["n_images"] > 0
    assert "msn-ehr (pretrained on mimic-cxr)" in render_task("nih14-cls", "synthetic", [rec])

    assert main(["-q", "run", "--method", "random", "--task", "nih14-cls", "--profile", "smoke", "--data-root",
                 str(world), "--results", str(results), "--pretrain-on", "no-such-dataset"]) != 0
    assert "unknown dataset" in capsys.readouterr().err

    # a method that does not pretrain on the task's data: the flag does not apply, and no row claims it
    random_argv = ["-q", "run", "--method", "random", "--task", "nih14-cls", "--profile", "smoke", "--data-root",
                   str(world), "--results", str(tmp_path / "random"), "--pretrain-on", "mimic-cxr"]
    assert main(random_argv) == 0, capsys.readouterr().err[-2000:]
    [path] = list((tmp_path / "random").rglob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["pretrain"]["dataset"] == "nih14"
    table = render_task("nih14-cls", "synthetic", [rec])
    assert "random" in table and "pretrained on" not in table


def test_tasks_on_the_same_training_rows_share_one_pretraining(world):
    """The pretraining key covers the training rows' own pixels, not the rest of a task's image store."""
    from harness.dispatch.runner import RunRequest, prepare

    def data(task: str, pretrain_on: str | None = None):
        req = RunRequest(method="msn", task=task, profile="smoke", data_root=str(world), progress=False,
                         pretrain_on=pretrain_on)
        return prepare(req).pretraining_data()

    mimic, external, nih = data("mimic-cls"), data("chexpert-ext"), data("nih14-cls", pretrain_on="mimic-cxr")
    assert mimic.dataset == external.dataset == nih.dataset == "mimic-cxr"
    assert mimic.fingerprint == external.fingerprint == nih.fingerprint  # chexpert-ext's store also holds CheXpert
    assert data("nih14-cls").fingerprint != mimic.fingerprint
    path = str(mimic.frame["path"].iloc[0])  # a training image changes on disk: a new key
    os.utime(path, ns=(0, 12345))
    assert data("mimic-cls").fingerprint != mimic.fingerprint
