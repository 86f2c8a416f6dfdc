"""Every task file runs end to end on a small synthetic world with the ``random`` method (smoke profile)."""

import json
import math

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
