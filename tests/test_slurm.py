"""A real single-node Slurm: `harness run --executor slurm` and a sweep (arrays + afterok) through it.

Opt-in (``pytest -m slurm tests/test_slurm.py``): the fixture installs slurm-wlm + munge with apt
when missing and starts slurmctld + slurmd on localhost under a temp dir (see slurm_fixture.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_fixture import SingleNodeSlurm, SlurmUnavailable

from harness.dispatch import executors
from tests import test_dispatch

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = SingleNodeSlurm(tmp_path_factory.mktemp("slurm")).start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no single-node Slurm here: {exc}")
    yield cluster
    cluster.stop()


def _harness(cluster: SingleNodeSlurm, *argv: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = cluster.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_harness_run_on_slurm(slurm, tmp_path):
    out = _harness(slurm, "run", "--method", "random", "--task", "mock", "--profile", "smoke", "--executor", "slurm",
                   "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "logs"), "--time-min", "10")
    assert out.returncode == 0, out.stdout + out.stderr + slurm.logs()
    [record] = list((tmp_path / "results").rglob("*.json"))
    rec = json.loads(record.read_text())
    assert rec["task"] == "mock" and rec["method"] == "random" and 0 <= rec["metrics"][rec["main_metric"]] <= 1
    sbatch = list((tmp_path / "logs").rglob("*_submission.sh"))
    assert sbatch and "#SBATCH --time=10" in sbatch[0].read_text()


def test_sweep_on_slurm_uses_arrays_and_afterok(slurm, tmp_path):
    argv = ("sweep", "--methods", "random", "--tasks", "mock", "--fractions", "1", "--seeds", "0", "1",
            "--profile", "smoke", "--executor", "slurm", "--results", str(tmp_path / "results"),
            "--logs", str(tmp_path / "logs"), "--time-min", "10", "--array-parallelism", "2")
    out = _harness(slurm, *argv)
    assert out.returncode == 0, out.stdout + out.stderr + slurm.logs()
    assert "2 done, 0 failed, 0 skipped" in out.stdout
    assert len(list((tmp_path / "results").rglob("*.json"))) == 2
    scripts = [p.read_text() for p in (tmp_path / "logs").rglob("*_submission.sh")]
    assert any("#SBATCH --dependency=afterok:" in s for s in scripts)  # evaluations wait for pretraining
    assert any("#SBATCH --array=0-1%2" in s for s in scripts)  # the two seeds as one throttled array
    again = _harness(slurm, *argv)
    assert again.returncode == 0 and "0 done, 0 failed, 2 skipped" in again.stdout


def test_fixture_runs_plain_srun(slurm):
    out = subprocess.run(["srun", "hostname"], env=slurm.env(), capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert os.environ.get("SLURM_CONF") != str(slurm.conf)  # the fixture leaves this process's env alone


def test_slurm_options_become_sbatch_lines(slurm, tmp_path):
    """The job script submitit writes for the options (its SlurmExecutor needs srun on PATH)."""
    config = tmp_path / "cluster.yaml"
    config.write_text(test_dispatch.SLURM_YAML)
    args = test_dispatch._args("--executor", "slurm", "--slurm-config", str(config), *test_dispatch.SLURM_ARGV,
                               "--logs", str(tmp_path / "logs"))
    executor = executors.make_executor(args, dependency="afterok:42_0")
    text = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    lines = {line for line in text.splitlines() if line.startswith("#SBATCH")}
    for expected in ("--partition=gpu", "--account=lab", "--qos=high", "--gpus-per-node=2", "--mem=64GB",
                     "--time=90", "--constraint=a100", "--cpus-per-task=8", "--ntasks-per-node=2",
                     "--reservation=ml", "--exclusive=user", "--dependency=afterok:42_0", "--nodes=1"):
        assert f"#SBATCH {expected}" in lines, (expected, sorted(lines))
    assert any(line.startswith("#SBATCH --signal=USR2@") for line in lines)  # preemption -> checkpoint
    assert "export PYTHONPATH=" in text  # jobs can unpickle harness.dispatch.jobs.RunJob from this checkout
    assert executor._executor.parameters["array_parallelism"] == 3
