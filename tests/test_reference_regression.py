"""CI regression: rerun the reference suite and regress against leaderboards/reference/reference.yaml.

A change that moves a suite mean by more than its tolerance (derived from the measured
seed-to-seed spread, stored in the file) fails here until the reference is regenerated on
purpose: ``python -m harness regress --regenerate-reference`` (see harness/reporting/reference.py).
"""

import pytest
import yaml

from harness.reporting.reference import REFERENCE, load_suite, run_suite, suite_world
from harness.reporting.regress import load_reference, run_regress


def test_reference_file_is_synthetic_with_measured_tolerances():
    ref = load_reference(REFERENCE)
    assert ref.data_source == "synthetic"
    raw = yaml.safe_load(REFERENCE.read_text())
    tasks = {e["task"] for e in ref.entries}
    assert {"mock", "mimic-cls"} <= tasks
    assert {"random", "imagenet", "moco", "msn"} <= {e["method"] for e in ref.entries}
    for e in ref.entries:  # tolerance = max(2 * std * sqrt(2 / n), floor), as documented
        assert e["n_seeds"] == 3 and e["tolerance"] >= 0.002
        assert e["tolerance"] == pytest.approx(max(2 * e["seed_std"] * (2 / 3) ** 0.5, 0.002), abs=2e-6)
    assert all(s["reason"] for s in raw["skipped"])


# Methods whose numbers are NOT reproducible across processes, with the cause. Each FAIL of theirs
# is tolerated (and must still run); remove the entry when the cause is fixed. Found by this test.
KNOWN_NONDETERMINISTIC: dict[str, str] = {}  # region-word / mlm-mvm were here until the WordPiece fix


@pytest.mark.slow
def test_reference_suite_reproduces(tmp_path):
    suite = load_suite()
    world = suite_world()
    assert run_suite(tmp_path / "results", world, suite) == []
    code, text = run_regress(tmp_path / "results", str(REFERENCE))
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| harness reference suite")]
    assert len(rows) == len(suite) and "not run" not in text, text
    failed = {row[1] for row in rows if row[-1].strip(" |") != "pass"}
    assert failed <= set(KNOWN_NONDETERMINISTIC), text
