"""Leaderboards that carry the statistics (issue 21, items 2, 5 and 7): cells with their 95 % interval,
the paired difference against a reference row from the predictions every run keeps, the tie mark,
label-using rows kept out of the comparison, each run's command, and the published figures as tables."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import metrics
from harness.cli import main
from harness.reporting.cells import cell_of, format_cell
from harness.reporting.leaderboard import render_all, render_task
from harness.reporting.pairing import RESAMPLES, SEED
from harness.reporting.published import NO_TASK, location, render_published
from harness.reporting.regress import PUBLISHED, load_reference
from harness.results import load_predictions, load_records, write_record
from tests.test_results import make_record

N_PATIENTS, PER_PATIENT, LABELS = 100, 2, 3


def test_cells_interval_over_varying_seeds_else_the_runs_bootstrap():
    varying = cell_of([0.70, 0.72, 0.74], [[0.6, 0.8], [0.62, 0.82], [0.64, 0.84]])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert varying.kind == "t" and varying.mean == pytest.approx(0.72)
    assert (varying.lo, varying.hi) == pytest.approx((0.72 - half, 0.72 + half))
    assert format_cell(varying) == "0.7200 [0.6703, 0.7697] (t, 3 seeds)"
    # three identical runs are one measurement: the run's bootstrap CI (the lowest seed's), never "± 0.0000"
    same = cell_of([0.7, 0.7, 0.7], [[0.61, 0.79], [0.62, 0.78], [0.6, 0.8]])
    assert (same.kind, same.lo, same.hi) == ("bootstrap", 0.61, 0.79)
    assert format_cell(same) == "0.7000 [0.6100, 0.7900] (bootstrap, 3 identical runs)"
    assert format_cell(cell_of([0.7], [[0.6, 0.8]])) == "0.7000 [0.6000, 0.8000] (bootstrap)"
    assert format_cell(cell_of([0.7, 0.7], [None, None])) == "0.7000 (no CI, 2 identical runs)"
    assert format_cell(cell_of([math.nan, math.nan], [None, None])) == "n/m"
    partly = cell_of([0.7, math.nan], [[0.6, 0.8], None])
    assert format_cell(partly) == "0.7000 [0.6000, 0.8000] (bootstrap); n/m in 1 of 2 runs"


def _test_set(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random((N_PATIENTS * PER_PATIENT, LABELS)) < 0.4).astype(np.float32)
    groups = metrics.patient_index(np.repeat([f"p{i}" for i in range(N_PATIENTS)], PER_PATIENT))
    return y, groups


def _rows(results: Path, with_old: bool = True) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Records of four methods (two seeds) with kept predictions on one test set; ``old`` has none."""
    rng = np.random.default_rng(0)
    y, groups = _test_set(rng)
    kept = {}
    for seed in (0, 1):
        good = y + rng.normal(scale=0.8, size=y.shape)
        scores = {"random": rng.normal(size=y.shape), "good": good,
                  "close": good + rng.normal(scale=0.05, size=y.shape),  # the same encoder, slightly perturbed
                  "oracle": y + rng.normal(scale=0.1, size=y.shape)}   # learnt from the labels: a ceiling
        for method, s in scores.items():
            s = s.astype(np.float32)
            predictions = {"scores": s, "targets": y, "groups": groups}
            rec = make_record(seed, method=method, task="mimic-cls", fraction=1.0,
                              metrics={"auroc_macro": metrics.auroc_macro(y, s)}, weights_sha256=method.ljust(64, "0"),
                              method_card={"pretraining_data": [], "uses_labels": method == "oracle"},
                              argv=["python", "-m", "harness", "run", "--method", method, "--task", "mimic-cls",
                                    "--seed", str(seed)])
            write_record(results, rec, predictions)
            kept[(method, seed)] = predictions
        if with_old:
            write_record(results, make_record(seed, method="old", task="mimic-cls", fraction=1.0,
                                              metrics={"auroc_macro": 0.6 + seed / 100},
                                              weights_sha256="o" * 64))
    return kept


def _row(text: str, name: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"| {name} ")]
    return [c.strip() for c in line.strip("|").split("|")]


def _paired(kept: dict, a: str, b: str) -> metrics.PairedComparison:
    """The paired comparison computed by hand: same patient draws for both rows, averaged over seeds."""
    deltas, draws = [], []
    for seed in (0, 1):
        pa, pb = kept[(a, seed)], kept[(b, seed)]
        deltas.append(metrics.auroc_macro(pa["targets"], pa["scores"]) - metrics.auroc_macro(pb["targets"],
                                                                                            pb["scores"]))
        draws.append(metrics.bootstrap_values(metrics.auroc_macro, pa["targets"], pa["scores"], groups=pa["groups"],
                                              n=RESAMPLES, seed=SEED)
                     - metrics.bootstrap_values(metrics.auroc_macro, pb["targets"], pb["scores"], groups=pb["groups"],
                                                n=RESAMPLES, seed=SEED))
    return metrics.paired_from_draws(deltas, draws)


def test_paired_difference_tie_mark_and_label_rows(tmp_path):
    results = tmp_path / "results"
    kept = _rows(results)
    records, problems = load_records(results)
    assert problems == [] and len(records) == 10
    text = render_task("mimic-cls", "synthetic", records, results)
    header = [c.strip() for c in text.split("\n| method | ")[1].split("\n")[0].strip("|").split("|")]
    assert header == ["auroc_macro", "Δ vs random", "vs best", "harness", "task"]

    good = _row(text, "good")
    cmp = _paired(kept, "good", "random")
    assert cmp.lo > 0  # an informative encoder beats random features with an interval above zero
    assert good[2] == f"{cmp.delta:+.4f} [{cmp.lo:+.4f}, {cmp.hi:+.4f}] (2 seeds)"
    assert good[3] == "best" and good[1].endswith("(t, 2 seeds)") and good[4:] == ["0", "v1"]
    close = _row(text, "close")
    tie = _paired(kept, "close", "good")
    assert tie.lo <= 0 <= tie.hi and close[3] == "≈ best"  # statistically tied with the best row
    assert _row(text, "random")[2:4] == ["reference", "below best"]
    # the oracle scores highest, but it learnt from the labels: marked, listed last, never the best
    oracle = _row(text, "oracle (uses labels)")
    assert oracle[3] == "not ranked (uses labels)"
    assert float(oracle[1].split()[0]) > float(good[1].split()[0])
    assert text.index("| oracle (uses labels)") > text.index("| random ")
    # a record from before predictions were kept: no paired column, and it says why
    assert _row(text, "old")[2:4] == ["n/a: no predictions (older record)", "n/a: no predictions (older record)"]
    # each row carries the exact command of each of its runs
    assert ("- good: `python -m harness run --method good --task mimic-cls --seed 0` (seed 0); "
            "`python -m harness run --method good --task mimic-cls --seed 1` (seed 1)") in text
    assert "- old: not recorded (older record) (seeds 0, 1)" in text

    # pairing is what makes close rows comparable: the same draws for both remove the shared test-set noise
    pa, pb = kept[("close", 0)], kept[("good", 0)]
    apart = (metrics.bootstrap_values(metrics.auroc_macro, pa["targets"], pa["scores"], groups=pa["groups"], n=500,
                                      seed=1)
             - metrics.bootstrap_values(metrics.auroc_macro, pb["targets"], pb["scores"], groups=pb["groups"], n=500,
                                        seed=2))
    assert tie.hi - tie.lo < 0.5 * float(np.subtract(*np.percentile(apart, [97.5, 2.5])))


def test_reference_option_and_a_label_row_is_never_the_reference(tmp_path, capsys):
    results = tmp_path / "results"
    kept = _rows(results, with_old=False)
    records, _ = load_records(results)
    text = render_task("mimic-cls", "synthetic", records, results, reference="good")
    cmp = _paired(kept, "random", "good")
    assert _row(text, "random")[2] == f"{cmp.delta:+.4f} [{cmp.lo:+.4f}, {cmp.hi:+.4f}] (2 seeds)"
    assert _row(text, "good")[2] == "reference" and "Δ vs good" in text
    text = render_task("mimic-cls", "synthetic", records, results, reference="oracle")
    assert _row(text, "good")[2] == "n/a: oracle uses labels, never the reference"
    assert _row(text, "random")[2] == "n/a: oracle uses labels, never the reference"
    text = render_task("mimic-cls", "synthetic", records, results, reference="nobody")
    assert _row(text, "good")[2] == "n/a: no nobody row"
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb"), "--reference", "close",
                 "--published", "none"]) == 0
    assert "Δ vs close" in (tmp_path / "lb" / "synthetic" / "mimic-cls.md").read_text()
    assert not (tmp_path / "lb" / "published").exists()


def test_predictions_on_other_test_units_or_too_few_patients_are_not_paired(tmp_path):
    rng = np.random.default_rng(3)
    y, groups = _test_set(rng)
    for method, g in (("a", groups), ("b", groups[::-1].copy()), ("c", np.zeros_like(groups))):
        s = (y + rng.normal(size=y.shape)).astype(np.float32)
        write_record(tmp_path, make_record(0, method=method, task="t", metrics={"auroc_macro": 0.7},
                                           weights_sha256=method * 64),
                     {"scores": s, "targets": y, "groups": g})
    records, _ = load_records(tmp_path)
    text = render_task("t", "synthetic", records, tmp_path, reference="a")
    assert _row(text, "b")[2] == "n/a: other test units than a"
    assert _row(text, "c")[2] == "n/a: too few patients"


def test_regeneration_floor_and_mode_and_not_measurable_cells(tmp_path):
    recs = [make_record(s, method=m, task="regen", main_metric="psnr_gain",
                        metrics={"psnr_gain": v + s / 10, "psnr": 18 + v}, weights_sha256=m * 64,
                        details={"mode": mode, "floor": {"psnr": 17.7 + s / 10, "ssim": 0.5}})
            for m, v, mode in (("imagenet", 1.0, "probe"), ("mlm-mvm", 2.0, "native")) for s in (0, 1)]
    recs += [make_record(0, method="broken", task="regen", main_metric="psnr_gain",
                         metrics={"psnr_gain": math.nan, "psnr": math.nan}, weights_sha256="b" * 64)]
    text = render_task("regen", "synthetic", recs)
    header = text.split("\n| method | ")[1].split("\n")[0]
    assert "| mode | floor |" in header
    assert _row(text, "imagenet")[5:7] == ["probe", "psnr 17.75, ssim 0.5"]
    assert _row(text, "mlm-mvm")[5:7] == ["native", "psnr 17.75, ssim 0.5"]
    broken = _row(text, "broken")
    assert broken[1] == "n/m" and broken[3] == "n/a: no predictions (older record)"
    assert text.index("| broken ") > text.index("| imagenet ")  # not measurable: listed last
    assert _row(text, "mlm-mvm")[3] == "best"


def test_a_run_records_its_command_and_keeps_what_the_paired_bootstrap_needs(tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["-q", "run", "--method", "random", "--task", "mock", "--profile", "smoke", "--results", str(results)]
    assert main(argv) == 0  # no --save-predictions
    [path] = results.rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["argv"] == ["python", "-m", "harness", *argv]
    kept = load_predictions(results, rec)
    assert kept is not None and set(kept) == {"scores", "targets", "groups", "f1_thresholds"}
    groups = kept["groups"]
    # an anonymous index, 0, 1, 2, ... by first appearance (so indexing it again changes nothing), never an id
    assert groups.dtype == np.int64 and np.array_equal(metrics.patient_index(groups), groups)
    assert 1 < groups.max() + 1 < len(groups)  # patients with several test images share a value
    # item 2: the record's CI is the patient-level bootstrap of the main metric with the task's resamples
    fn, arrays = metrics.metric_inputs(kept, rec["main_metric"])
    assert fn(*arrays) == pytest.approx(rec["metrics"]["auroc_macro"], abs=1e-6)
    boot = metrics.bootstrap_ci(fn, *arrays, groups=groups, n=rec["config"]["protocol_args"].get("bootstrap", 1000),
                                seed=rec["seed"])
    assert (boot.lo, boot.hi) == pytest.approx(tuple(rec["ci"]["auroc_macro"]), abs=1e-6)
    assert rec["details"]["bootstrap"]["unit"] == "patient"


def test_every_run_request_carries_the_command_that_asked_for_it():
    from harness.dispatch.runner import RunRequest, set_invocation

    set_invocation(["python", "-m", "harness", "sweep", "--methods", "random", "--tasks", "mock"])
    try:
        req = RunRequest(method="random", task="mock")  # as sweep and submit make them
        assert pickle.loads(pickle.dumps(req)).argv == ["python", "-m", "harness", "sweep", "--methods", "random",
                                                        "--tasks", "mock"]  # travels to the job
    finally:
        set_invocation(None)
    assert RunRequest(method="random", task="mock").argv is None  # the Python API: no command


def test_published_figures_as_tables(tmp_path, capsys):
    ref = load_reference(PUBLISHED)
    written = render_published(PUBLISHED, tmp_path / "lb")
    tasks = {e["task"] or NO_TASK for e in ref.entries}
    assert sorted(p.stem for p in written) == sorted(tasks)
    rows = 0
    for path in written:
        text = path.read_text()
        assert "as reported, not reproduced" in text.splitlines()[2]
        rows += sum(1 for line in text.splitlines() if line.startswith("| ") and not line.startswith("| paper "))
    assert rows == len(ref.entries)  # every figure once
    cls = (tmp_path / "lb" / "published" / "mimic-cls.md").read_text()
    assert "## linear-probe, label fraction 1" in cls
    assert ("| Shurrab, Guerra-Manzanares, Shamout, Sci Rep 2024 | msn-ehr − msn | mimic-cxr | auroc_macro | +2 % | "
            "difference | abstract | abstract | ABS | yes | doi:10.1038/s41598-024-74043-x |") in cls
    assert location("MaCo, Nature Communications 2024, s41467-024-51749-0, Table 1 (linear probing, AUC %)") == "table"
    assert location("JoImTeR/TestingR1k.ipynb output (whole 3,000-pair test set)") == "notebook"
    assert location("v1 abstract") == "abstract"
    nih = (tmp_path / "lb" / "published" / "nih14-cls.md").read_text()
    assert "| 2ND | no |" in nih and "## linear-probe, label fraction 0.01" in nih

    # through the CLI: rendered with the leaderboards (even without a record), a broken file is one line
    assert main(["leaderboard", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "cli")]) == 1
    assert (tmp_path / "cli" / "published" / "mimic-retrieval-1k.md").is_file()
    assert "no result records" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data_source": "real", "entries": [{"paper": "x"}]}))
    assert main(["leaderboard", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "cli"),
                 "--published", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"harness: error: {bad}: entry 0: missing ")


def test_render_all_pairs_rows_from_the_results_dir(tmp_path):
    results = tmp_path / "results"
    kept = _rows(results, with_old=False)
    [path], problems = render_all(results, tmp_path / "lb", pictures=False)
    cmp = _paired(kept, "close", "random")
    assert problems == [] and f"{cmp.delta:+.4f} [{cmp.lo:+.4f}, {cmp.hi:+.4f}] (2 seeds)" in path.read_text()


def test_the_fast_resampled_auroc_equals_materialised_resamples_with_ties_and_ignored_targets():
    rng = np.random.default_rng(5)
    y = (rng.random((300, 4)) < 0.3).astype(float)
    y[::7, 0] = np.nan  # the label policy's "ignore"
    s = np.round(rng.random((300, 4)), 1)  # heavy ties: every score shared by about 30 rows
    groups = metrics.patient_index(np.repeat(np.arange(100), 3))
    fast = metrics.bootstrap_values(metrics.auroc_macro, y, s, groups=groups, n=100, seed=4)
    slow = metrics.bootstrap_values(lambda a, b: metrics.auroc_macro(a, b), y, s, groups=groups, n=100, seed=4)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_compare_adds_the_paired_bootstrap_over_test_patients(tmp_path, capsys):
    results = tmp_path / "results"
    kept = _rows(results, with_old=False)
    assert main(["compare", "--results", str(results), "--task", "mimic-cls", "good", "random"]) == 0
    out = capsys.readouterr().out
    cmp = _paired(kept, "good", "random")
    [line] = [line for line in out.splitlines() if line.startswith("| 1 | 2 |")]
    assert line.endswith(f"| 2/2 | {cmp.delta:+.4f} [{cmp.lo:+.4f}, {cmp.hi:+.4f}] |")
    assert "paired bootstrap over test patients |" in out
