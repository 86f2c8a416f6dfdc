"""regress: passes on matching records, fails on a shifted one, reports missing and synthetic-only ones."""

import pytest
import yaml

from harness.regress import PUBLISHED, RegressError, compare, load_entries, run_regress
from harness.results import write_record
from tests.test_results import make_record


def entry(**kw):
    e = {"paper": "P", "id": "x", "where": "abstract", "method": "moco", "versus": "imagenet", "dataset": "d",
         "task": "mimic-mm-cls", "protocol": "multimodal-cls", "fraction": 0.1, "metric": "auroc_macro",
         "value": 5.0, "unit": "percent", "kind": "difference", "evidence": "ABS", "verified": True,
         "tolerance": 1.0}
    e.update(kw)
    return e


def records(moco, imagenet, source="real"):
    out = []
    for method, vals in (("moco", moco), ("imagenet", imagenet)):
        for seed, v in enumerate(vals):
            out.append(make_record(seed, method=method, task="mimic-mm-cls", protocol="multimodal-cls",
                                   fraction=0.1, data_source=source, metrics={"auroc_macro": v}))
    return out


def test_difference_passes_then_fails_when_shifted():
    [row] = compare(records([0.80, 0.81, 0.82], [0.75, 0.76, 0.77]), [entry()])
    assert row.verdict == "pass" and abs(row.reproduced - 0.05) < 1e-12
    [row] = compare(records([0.70, 0.71, 0.72], [0.75, 0.76, 0.77]), [entry()])
    assert row.verdict == "FAIL" and row.interval[1] < 0.05


def test_absolute_missing_synthetic_and_unverified():
    e_abs = entry(kind="absolute", versus=None, value=80.0, tolerance=1.0)
    recs = records([0.795, 0.80, 0.805], [0.7])
    assert compare(recs, [e_abs])[0].verdict == "pass"
    assert compare(recs, [entry(kind="absolute", versus=None, method="gloria", value=80.0)])[0].verdict == "not run"
    assert compare(records([0.8], [0.7], "synthetic"), [e_abs])[0].verdict.startswith("not comparable")
    assert compare(records([0.2], [0.7]), [dict(e_abs, verified=False)])[0].verdict == "info"


def test_cli_exit_codes_and_markdown(tmp_path):
    for rec in records([0.70, 0.71, 0.72], [0.75, 0.76, 0.77]):
        write_record(tmp_path / "results", rec)
    ref = tmp_path / "ref.yaml"
    ref.write_text(yaml.safe_dump({"entries": [entry()]}))
    code, text = run_regress(tmp_path / "results", str(ref), tmp_path / "out.md")
    assert code == 1 and "| FAIL |" in text and (tmp_path / "out.md").read_text() == text
    ref.write_text(yaml.safe_dump({"entries": [entry(value=-5.0)]}))
    assert run_regress(tmp_path / "results", str(ref))[0] == 0


def test_published_file_validates_and_nothing_passes_without_records(tmp_path):
    entries = load_entries(PUBLISHED)
    assert len(entries) >= 17 and {e["evidence"] for e in entries} <= {"ABS", "CODE", "2ND"}
    code, text = run_regress(tmp_path, "published")
    assert code == 0 and "| pass |" not in text and "not run" in text
    with pytest.raises(RegressError, match="real-data figures"):
        run_regress(tmp_path, "published", data_source="synthetic")
