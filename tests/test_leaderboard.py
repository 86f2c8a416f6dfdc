from pathlib import Path

import numpy as np
import pytest

from harness.reporting.leaderboard import GENERATED, leakage, render_all, row_names
from harness.results import write_record
from tests.test_results import make_record

GOLDEN = Path(__file__).parent / "golden" / "leaderboard_mimic-cls.md"


def fixed_records(results: Path) -> None:
    values = {("moco", 0.1): [0.71, 0.73, 0.72], ("random", 0.1): [0.55, 0.57, 0.56],
              ("moco", 1.0): [0.80, 0.82, 0.81], ("random", 1.0): [0.60, 0.61, 0.62]}
    for (method, fraction), vals in values.items():
        for seed, v in enumerate(vals):
            pretraining = ["mimic-cxr:test"] if method == "random" else ["{task}"]
            write_record(results, make_record(
                seed, method=method, task="mimic-cls", fraction=fraction, metrics={"auroc_macro": v,
                                                                                   "auprc_macro": v - 0.3},
                weights_sha256=(method * 64)[:64], eval_dataset="mimic-cxr", protocol="linear-probe",
                profile="small", method_card={"pretraining_data": pretraining}))
    write_record(results, make_record(0, method="moco", task="mimic-cls", data_source="real",
                                      metrics={"auroc_macro": 0.9}, eval_dataset="mimic-cxr"))


def test_leaderboard_matches_golden_and_separates_sources(tmp_path):
    fixed_records(tmp_path / "results")
    written, problems = render_all(tmp_path / "results", tmp_path / "lb")
    assert problems == []
    assert sorted(p.relative_to(tmp_path / "lb").as_posix() for p in written) == [
        "real/mimic-cls.md", "synthetic/mimic-cls.md"]
    text = (tmp_path / "lb" / "synthetic" / "mimic-cls.md").read_text()
    assert text.startswith(GENERATED)
    assert "0.9000" not in text  # the real record never enters the synthetic table
    assert text == GOLDEN.read_text()


def test_leakage_flag():
    assert leakage({"eval_dataset": "chexpert", "method_card": {"pretraining_data": ["chexpert:val"]}})
    assert leakage({"eval_dataset": "chexpert", "method_card": {"pretraining_data": ["mimic-cxr:train"]}}) == ""
    assert leakage({"eval_dataset": "mimic-cxr", "method_card": {"pretraining_data": ["{task}"]}}) == ""


def _variant(seed: int, groups: list[str], value: float, **kw) -> dict:
    """An msn-ehr record whose pretraining seed is the evaluation seed (``--set seed=N``)."""
    return make_record(seed, method="msn-ehr", task="nih14-cls", dataset="nih14", metrics={"auroc_macro": value},
                       config={"method": {"seed": seed, "lr": 1e-3, "ehr": {"groups": groups}}},
                       weights_sha256=f"{seed}{groups[0]}".ljust(64, "0"), pretrain={"dataset": "mimic-cxr"}, **kw)


def test_row_names_separate_config_variants_not_pretraining_seeds():
    recs = [_variant(s, g, 0.6) for s in range(3) for g in (["demographics"], ["demographics", "scan"])]
    names = row_names(recs)
    assert names[:2] == ["msn-ehr {ehr.groups=['demographics']} (pretrained on mimic-cxr)",
                         "msn-ehr {ehr.groups=['demographics', 'scan']} (pretrained on mimic-cxr)"]
    assert len(set(names)) == 2  # three seeds per variant, each with its own weights, are one row
    twice = [_variant(0, ["scan"], 0.6), _variant(0, ["scan"], 0.7, git_commit="y")]
    twice[1]["weights_sha256"] = "f" * 64  # same row, fraction and seed, other weights: told apart
    assert row_names(twice) == ["msn-ehr (pretrained on mimic-cxr) [0scan000]",
                                "msn-ehr (pretrained on mimic-cxr) [ffffffff]"]


def test_compare_pairs_by_seed(tmp_path, capsys):
    from harness.cli import main
    from harness.reporting.compare import paired

    a, b = [0.70, 0.64, 0.75], [0.66, 0.61, 0.70]  # a spread larger than the differences, all positive
    for seed in range(3):
        write_record(tmp_path, make_record(seed, method="moco", metrics={"auroc_macro": a[seed]}, fraction=0.1))
        write_record(tmp_path, make_record(seed, method="random", metrics={"auroc_macro": b[seed]}, fraction=0.1,
                                           weights_sha256="r" * 64))
    write_record(tmp_path, make_record(3, method="moco", metrics={"auroc_macro": 0.9}, fraction=0.1))  # unpaired
    from harness.results import load_records

    [row] = paired(load_records(tmp_path)[0], "moco", "random")
    assert row["seeds"] == [0, 1, 2] and row["wins"] == 3
    d = np.array(a) - np.array(b)
    assert row["mean_diff"] == pytest.approx(d.mean())
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert row["ci95"] == pytest.approx((d.mean() - half, d.mean() + half))
    assert main(["compare", "--results", str(tmp_path), "--task", "t", "moco", "random"]) == 0
    out = capsys.readouterr().out
    assert "| 0.1 | 3 |" in out and "3/3" in out and "synthetic data" in out
    assert main(["compare", "--results", str(tmp_path), "--task", "t", "moco", "nope"]) == 2
    assert "no row 'nope'" in capsys.readouterr().err

    for seed in range(3):  # the seeds change nothing (deterministic probe, one pretraining): no fake interval
        write_record(tmp_path, make_record(seed, method="moco", metrics={"auroc_macro": 0.8}, fraction=1.0))
        write_record(tmp_path, make_record(seed, method="random", metrics={"auroc_macro": 0.7}, fraction=1.0,
                                           weights_sha256="r" * 64))
    assert main(["compare", "--results", str(tmp_path), "--task", "t", "moco", "random"]) == 0
    [full] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |")]
    assert "+0.1000 | n/a (identical across seeds) | 3/3" in full


def _world_records(results: Path, world: dict, values: dict[tuple[str, float], list[float]], day: str) -> str:
    """Records of moco and random on one world; returns that data's fingerprint."""
    from harness.results import data_fingerprint

    for (method, fraction), vals in values.items():
        for seed, v in enumerate(vals):
            rec = make_record(seed, method=method, task="mimic-cls", fraction=fraction, world=world,
                              dataset_fingerprint=f"{world['calibration']:x<64}"[:64], metrics={"auroc_macro": v},
                              weights_sha256=(method + world["calibration"]).ljust(64, "0"), started_at=day)
            write_record(results, rec)
    return data_fingerprint(rec)


def test_runs_on_different_data_get_separate_labelled_tables(tmp_path):
    from tests.test_results import WORLD, WORLD_XRV

    old = _world_records(tmp_path / "results", WORLD, {("moco", 0.1): [0.71, 0.73], ("moco", 1.0): [0.80, 0.82],
                                                       ("random", 1.0): [0.60, 0.62]}, "2024-01-01T00:00:00")
    new = _world_records(tmp_path / "results", WORLD_XRV, {("moco", 0.1): [0.51, 0.53], ("moco", 1.0): [0.90, 0.92]},
                         "2024-02-01T00:00:00")
    [path], problems = render_all(tmp_path / "results", tmp_path / "lb")
    assert problems == [f"{path}: mimic-cls (synthetic) has runs on 2 different data ({new}: 4 records, {old}: 6 "
                        "records): rendered as separate tables, never in one row"]
    text = path.read_text()
    assert f"- data: 2 different data (`{new}`, `{old}`)" in text
    head_new = f"## data `{new}`: synthetic world harness.synth v1, seed 0, scale 1, calibration torchxrayvision"
    head_old = f"## data `{old}`: synthetic world harness.synth v1, seed 0, scale 1, calibration spec"
    assert text.index(head_new) < text.index(head_old)  # the most recent data first
    newer, older = text[text.index(head_new):text.index(head_old)], text[text.index(head_old):]
    assert "| moco | 0.5200 [0.3929, 0.6471] (t, 2 seeds) |" in newer  # t(0.975, 1 df) x 0.0141 / sqrt 2
    assert "| moco | 0.9100 [0.7829, 1.0371] (t, 2 seeds) |" in newer
    assert "| moco | 0.7200 [0.5929, 0.8471] (t, 2 seeds) |" in older
    assert "| random | 0.6100 [0.4829, 0.7371] (t, 2 seeds) |" in older
    assert "| random" not in newer and "4 seeds" not in text  # no row joins the two data
    assert "### label fraction 0.1" in newer and "### label fraction 1" in older
    # one label-efficiency curve per data, never one over both
    assert sorted(p.name for p in path.parent.glob("*.png")) == [f"mimic-cls__data-{fp}-label-efficiency.png"
                                                                for fp in sorted((new, old))]
    assert f"- [data {new}: label efficiency" in text


def test_one_data_is_named_in_the_header(tmp_path):
    from tests.test_results import WORLD

    fp = _world_records(tmp_path / "results", WORLD, {("moco", 1.0): [0.8, 0.82]}, "2024-01-01T00:00:00")
    [path], problems = render_all(tmp_path / "results", tmp_path / "lb", pictures=False)
    assert problems == []
    text = path.read_text()
    assert f"- data: `{fp}`: synthetic world harness.synth v1, seed 0, scale 1, calibration spec\n" in text
    assert "## label fraction 1" in text and "## data" not in text
