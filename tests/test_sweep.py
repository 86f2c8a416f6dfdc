"""Sweeps: grid expansion, a failing cell that stops nothing, skip-existing, the summary."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from harness.dispatch import executors, failures, sweep

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def _mock_ready() -> bool:
    try:
        from harness.catalog import METHODS
        from harness.data import roots  # noqa: F401

        METHODS.get("random")
        return (TASKS / "mock.yaml").exists()
    except Exception:  # noqa: BLE001 - any missing piece means "not yet"
        return False


needs_mock = pytest.mark.skipif(not _mock_ready(), reason="the mock task / random method / data roots are not "
                                "importable yet")


def _result_records(results: Path) -> list[Path]:
    """The result records under ``results`` (not the failure records in ``results/failed/``)."""
    return [p for p in results.rglob("*.json") if p.relative_to(results).parts[0] != failures.FAILURES_DIR]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sweep.add_sweep_arguments(parser)
    executors.add_executor_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def tasks_dir(tmp_path) -> Path:
    """The mock task plus ``mock-broken``: it loads, but names a label the mock dataset lacks."""
    directory = tmp_path / "tasks"
    directory.mkdir()
    shutil.copy(TASKS / "mock.yaml", directory / "mock.yaml")
    text = (TASKS / "mock.yaml").read_text().replace("name: mock", "name: mock-broken")
    text = text.replace("labels: [Square, Bar]", "labels: [Square, NoSuchLabel]")
    assert "NoSuchLabel" in text
    (directory / "mock-broken.yaml").write_text(text)
    return directory


def test_lists_take_spaces_or_commas():
    args = _args("--methods", "random,moco", "imagenet", "--tasks", "mock", "--fractions", "0.1,1", "--seeds", "0")
    assert sweep._list(args.methods, str, "--methods") == ["random", "moco", "imagenet"]
    assert sweep._list(args.fractions, float, "--fractions") == [0.1, 1.0]
    assert args.skip_existing is True and _args("--methods", "a", "--tasks", "b", "--no-skip-existing").skip_existing \
        is False


@needs_mock
def test_sweep_reports_the_failing_cell_completes_the_others_then_skips(tmp_path, tasks_dir, capsys):
    argv = ("--methods", "random", "nonexistent-method", "--tasks", "mock", "mock-broken", "--fractions", "1",
            "--seeds", "0", "1", "--profile", "smoke", "--tasks-dir", str(tasks_dir),
            "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "logs"))
    code = sweep.run_sweep(_args(*argv))
    out = capsys.readouterr().out
    assert code == 1
    plan_rows = [line for line in out.splitlines() if line.startswith(("done", "failed", "skipped"))]
    assert sum(r.startswith("done") for r in plan_rows) == 2  # random x mock, seeds 0 and 1
    # random x mock-broken (2 seeds, failed in their jobs) + the unknown method on both tasks (not submitted)
    assert sum(r.startswith("failed") for r in plan_rows) == 4
    assert "NoSuchLabel" in out and "unknown method 'nonexistent-method'" in out
    broken_log = next(line for line in plan_rows if "mock-broken" in line and "random" in line).split()[-1]
    assert Path(broken_log).exists() and "NoSuchLabel" in Path(broken_log).read_text()
    records = _result_records(tmp_path / "results")
    assert len(records) == 2
    # the 4 failed cells have failure records beside the results (harness.dispatch.failures), never taken for results
    fails = {(f["method"], f["task"], f["seed"]): f for f in failures.load_failures(tmp_path / "results")}
    assert sorted(fails) == sorted([("random", "mock-broken", 0), ("random", "mock-broken", 1),
                                    ("nonexistent-method", "mock", None), ("nonexistent-method", "mock-broken", None)])
    assert all(f["expected"] and "traceback" not in f and "\n" not in f["reason"] for f in fails.values())
    assert "NoSuchLabel" in fails[("random", "mock-broken", 0)]["reason"]
    assert fails[("random", "mock-broken", 0)]["stage"] == "run"
    assert fails[("nonexistent-method", "mock", None)]["stage"] == "plan"

    # run again: the two finished cells are skipped, nothing is rerun
    code = sweep.run_sweep(_args(*argv[:2], "--tasks", "mock", *argv[6:]))
    out = capsys.readouterr().out
    assert code == 0 and "0 done, 0 failed, 2 skipped" in out
    assert sorted(_result_records(tmp_path / "results")) == sorted(records)


def test_the_data_root_is_resolved_only_for_tasks_that_need_one(tmp_path, capsys):
    from harness.cli import main

    missing = tmp_path / "no-such-root"
    argv = ["sweep", "--methods", "random", "--profile", "smoke", "--fractions", "1", "--seeds", "0",
            "--data-root", str(missing), "--results", str(tmp_path / "r"), "--logs", str(tmp_path / "logs")]
    assert main([*argv, "--tasks", "mimic-cls"]) == 2  # a task on real layouts: the bad root is one error line
    err = capsys.readouterr().err
    assert err.strip() == f"harness: error: data root {missing} is not a folder (from --data-root or " \
                          "$HARNESS_DATA_ROOT)"
    assert not (tmp_path / "r").exists()
    assert main(["-q", *argv, "--tasks", "mock"]) == 0  # the self-contained mock needs no root at all
    assert "1 done, 0 failed, 0 skipped" in capsys.readouterr().out


@needs_mock
def test_skip_existing_computes_the_recorded_data_fingerprint(tmp_path, corpus_world):
    from harness.dispatch.runner import RunRequest, execute
    from harness.results import data_fingerprint
    from harness.tasks import get_task

    results = tmp_path / "results"
    for task in ("mock", "chexpert-ext"):  # a self-contained dataset; a task with an external test set
        out = execute(RunRequest(method="random", task=task, profile="smoke", data_root=str(corpus_world),
                                 results_dir=str(results), progress=False))
        # what the sweep computes from the records alone (no image) is what the run recorded
        assert sweep._data_fingerprint(get_task(task), str(corpus_world)) == data_fingerprint(out.record)
    argv = ("--methods", "random", "--tasks", "mock", "chexpert-ext", "--fractions", "1", "--seeds", "0",
            "--profile", "smoke", "--data-root", str(corpus_world), "--results", str(results))
    plan = sweep.plan_sweep(_args(*argv))
    assert [(c.request.task, c.status) for c in plan.cells] == [("mock", "skipped"), ("chexpert-ext", "skipped")]
    assert all(Path(c.detail).is_file() for c in plan.cells)
