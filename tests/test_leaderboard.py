from pathlib import Path

from harness.leaderboard import GENERATED, leakage, render_all
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
