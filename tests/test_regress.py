"""regress: passes on matching records, fails on a shifted one, reports missing and synthetic-only ones."""

import numpy as np
import pytest
import yaml

from harness import metrics
from harness.cli import main
from harness.reporting.regress import PUBLISHED, RegressError, compare, load_reference, paired_difference, run_regress
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


def reference_file(path, entries, source="real"):
    path.write_text(yaml.safe_dump({"data_source": source, "entries": entries}))
    return str(path)


def test_difference_passes_then_fails_when_shifted():
    [row] = compare(records([0.80, 0.81, 0.82], [0.75, 0.76, 0.77]), [entry()])
    assert row.verdict == "pass" and abs(row.reproduced - 0.05) < 1e-12 and row.how == "t over seeds"
    [row] = compare(records([0.70, 0.71, 0.72], [0.75, 0.76, 0.77]), [entry()])
    assert row.verdict == "FAIL" and row.interval[1] < 0.05


def test_absolute_missing_synthetic_and_unverified():
    e_abs = entry(kind="absolute", versus=None, value=80.0, tolerance=1.0)
    recs = records([0.795, 0.80, 0.805], [0.7])
    assert compare(recs, [e_abs])[0].verdict == "pass"
    assert compare(recs, [dict(e_abs, value=82.0)])[0].verdict == "FAIL"
    assert compare(recs, [dict(e_abs, value=82.0)], tolerance=0.03)[0].verdict == "pass"  # --tolerance override
    assert compare(recs, [entry(kind="absolute", versus=None, method="gloria", value=80.0)])[0].verdict == "not run"
    assert compare(records([0.8], [0.7], "synthetic"), [e_abs])[0].verdict == "synthetic: not comparable"
    assert compare(records([0.2], [0.7]), [dict(e_abs, verified=False)])[0].verdict == "info (unverified)"


def _predictions(rng, y, quality):
    return (y + rng.normal(scale=1 / quality, size=y.shape)).astype(np.float32)


def test_paired_bootstrap_from_saved_predictions(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((300, 2)) < 0.4).astype(np.float32)
    results = tmp_path / "results"
    per_seed = []
    for seed in (0, 1):
        s_moco, s_imagenet = _predictions(rng, y, 2.0), _predictions(rng, y, 0.8)
        per_seed.append(({"scores": s_moco, "targets": y}, {"scores": s_imagenet, "targets": y}))
        for method, s in (("moco", s_moco), ("imagenet", s_imagenet)):
            rec = make_record(seed, method=method, task="mimic-mm-cls", protocol="multimodal-cls", fraction=0.1,
                              data_source="real", metrics={"auroc_macro": metrics.auroc_macro(y, s)},
                              weights_sha256=method * 64)
            write_record(results, rec, {"scores": s, "targets": y})
    # one seed: exactly harness.metrics.paired_bootstrap over test images
    one = paired_difference(per_seed[:1], "auroc_macro")
    ref = metrics.paired_bootstrap(metrics.auroc_macro, y, per_seed[0][0]["scores"], per_seed[0][1]["scores"],
                                   np.arange(len(y)), n=1000)
    assert one == pytest.approx((ref.delta, ref.lo, ref.hi))
    claimed = 100 * one[0]
    code, text = run_regress(results, reference_file(tmp_path / "ref.yaml", [entry(value=claimed, tolerance=0.5)]))
    assert code == 0 and "paired bootstrap (2 seeds)" in text and "| pass |" in text
    [row] = compare(*_loaded(results), results_dir=results)
    lo, hi = row.interval
    assert lo < row.reproduced < hi and hi - lo < 0.1


def _loaded(results):
    from harness.results import load_records

    return load_records(results)[0], [entry(value=0.0, tolerance=0.1)]


def test_cli_exit_codes_and_markdown(tmp_path, capsys):
    for rec in records([0.70, 0.71, 0.72], [0.75, 0.76, 0.77]):
        write_record(tmp_path / "results", rec)
    ref = reference_file(tmp_path / "ref.yaml", [entry()])
    code, text = run_regress(tmp_path / "results", ref, tmp_path / "out.md")
    assert code == 1 and "| FAIL |" in text and (tmp_path / "out.md").read_text() == text
    ref = reference_file(tmp_path / "ref.yaml", [entry(value=-5.0)])
    assert main(["regress", "--results", str(tmp_path / "results"), "--against", ref]) == 0
    assert "| pass |" in capsys.readouterr().out
    synthetic_ref = reference_file(tmp_path / "syn.yaml", [entry(value=-5.0)], source="synthetic")
    code, text = run_regress(tmp_path / "results", synthetic_ref)
    assert "real: not comparable" in text and "| pass |" not in text


def test_published_file_validates_and_nothing_passes_without_records(tmp_path):
    ref = load_reference(PUBLISHED)
    assert ref.data_source == "real" and len(ref.entries) >= 60
    assert {e["evidence"] for e in ref.entries} == {"ABS", "2ND", "UNVERIFIED"}
    assert all(not e["verified"] for e in ref.entries if e["evidence"] in ("2ND", "UNVERIFIED"))
    claims = {(e["method"], e["versus"], e["fraction"], e["value"]) for e in ref.entries if e["kind"] == "difference"}
    assert {("moco", "imagenet", 1.0, 0.6), ("moco", "imagenet", 0.1, 5.1), ("msn-ehr", "msn", 1.0, 2.0),
            ("moco", "imagenet", 0.001, 0.096)} <= claims
    code, text = run_regress(tmp_path, "published")
    assert code == 0 and "| pass |" not in text and "not run" in text
    with pytest.raises(RegressError, match="real-data figures"):
        run_regress(tmp_path, "published", data_source="synthetic")
