"""The CLI end to end on the mock task: a real run, a real record, a real leaderboard."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main


def harness_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=cwd or root, timeout=600)


def test_run_mock_writes_record_and_leaderboard(tmp_path, capsys):
    results = tmp_path / "results"
    for seed in (0, 1):
        assert main(["-q", "run", "--method", "random", "--task", "mock", "--profile", "smoke", "--seed", str(seed),
                     "--results", str(results), "--save-predictions"]) == 0
    out = capsys.readouterr().out
    assert "[synthetic] random on mock" in out and "auroc_macro =" in out and "record:" in out
    records = sorted(results.rglob("*.json"))
    assert len(records) == 2
    rec = json.loads(records[0].read_text())
    assert rec["data_source"] == "synthetic" and rec["task"] == "mock" and rec["seed"] in (0, 1)
    assert 0.0 <= rec["metrics"]["auroc_macro"] <= 1.0
    lo, hi = rec["ci"]["auroc_macro"]
    assert lo <= rec["metrics"]["auroc_macro"] <= hi
    assert len(rec["split_sha256"]) == 64 and len(rec["weights_sha256"]) == 64
    assert Path(records[0].with_name(rec["predictions_file"])).exists()

    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    table = (tmp_path / "lb" / "synthetic" / "mock.md").read_text()
    # two identical runs (fraction 1, a deterministic probe): one measurement, its bootstrap CI, not "± 0.0000"
    assert "| random |" in table and "(bootstrap, 2 identical runs)" in table and "data: synthetic" in table


@pytest.mark.parametrize("args, message", [
    (["run", "--method", "mcoo", "--task", "mock"], "unknown method 'mcoo'; did you mean 'moco'?"),
    (["run", "--method", "random", "--task", "mock-cl"], "unknown task 'mock-cl'"),
    (["run", "--method", "random", "--task", "mock", "--fraction", "1.5"], "--fraction must be in (0, 1]"),
    (["run", "--method", "random", "--task", "mock", "--profile", "smoke", "--set", "lerning_rate=1"],
     "unknown random config key 'lerning_rate'"),
])
def test_expected_mistakes_are_one_line_errors(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_shows_examples_and_ls_lists():
    out = harness_cli("run", "--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "--save-predictions" in out.stdout
    out = harness_cli("ls", "methods")
    assert {"random", "pixels", "moco", "msn-ehr", "region-word", "mlm-mvm", "supervised"} <= set(out.stdout.split())
    out = harness_cli("validate")
    assert out.returncode == 0, out.stdout
