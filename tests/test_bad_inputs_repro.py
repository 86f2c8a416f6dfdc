"""Bad inputs of reproducibility: runs on different data, worlds that are not what they say, calibrations
that cannot be had.

Runs on different data (another synthetic world, another calibration, a record older than the
``world`` field) must never overwrite each other, share a leaderboard row, be paired by
``compare``, be averaged by ``regress`` or make ``sweep --skip-existing`` skip a cell; an
unusable calibration or a broken world marker is one ``harness: error:`` line (exit 2) and
leaves nothing behind. Records are real files (``write_record`` or real runs on the corpus
world, ``tests/conftest.py``); damaged inputs are written, never mocked.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.dispatch.runner import RunRequest, execute
from harness.results import data_fingerprint, load_records, write_record
from harness.synth import MARKER, write_world
from tests.corpus import cli_error, copy_of
from tests.test_results import WORLD, WORLD_XRV, make_record
from tests.test_synth import use_fake_torchxrayvision


@pytest.fixture(scope="module")
def second_world(tmp_path_factory, corpus_world) -> Path:
    """Another small world (seed 3, MIMIC only): the same layout and task, other data."""
    root = tmp_path_factory.mktemp("second-world")
    write_world(root, sources=("mimic",), scale=0.04, seed=3, progress=False)
    return root


def _records(results: Path, method: str, world: dict | str | None, values: list[float], **kw) -> str:
    """One record per seed of ``method`` on task ``t`` on ``world``; returns the data fingerprint."""
    rec = {}
    for seed, value in enumerate(values):
        rec = make_record(seed, method=method, metrics={"auroc_macro": value}, fraction=0.1,
                          weights_sha256=(method + str(world)[:20]).ljust(64, "0")[:64], **kw)
        if world is not None:
            rec["world"] = world
        write_record(results, rec)
    return data_fingerprint(rec)


# ------------------------------------------------------------------------------------ records, leaderboard


def test_runs_on_two_worlds_write_two_records_and_two_tables(tmp_path, corpus_world, second_world, capsys):
    results = tmp_path / "results"
    outs = [execute(RunRequest(method="random", task="mimic-cls", profile="smoke", data_root=str(root),
                               results_dir=str(results), progress=False)) for root in (corpus_world, second_world)]
    a, b = (o.record for o in outs)
    assert a["world"]["seed"] == 1 and b["world"]["seed"] == 3 and a["weights_sha256"] == b["weights_sha256"]
    fps = [data_fingerprint(a), data_fingerprint(b)]
    assert fps[0] != fps[1] and outs[0].path != outs[1].path  # same method, weights, task, seed: two files
    assert [o.path.name.endswith(f"__d{fp}.json") for o, fp in zip(outs, fps)] == [True, True]
    assert sorted(r["world"]["seed"] for r in load_records(results)[0]) == [1, 3]

    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    captured = capsys.readouterr()
    [warning] = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert "mimic-cls (synthetic) has runs on 2 different data" in warning and all(fp in warning for fp in fps)
    text = (tmp_path / "lb" / "synthetic" / "mimic-cls.md").read_text()
    assert text.count("## data `") == 2 and "seed 1, scale 0.05" in text and "seed 3, scale 0.04" in text
    assert text.count("| random | ") == 2 and "(n=2)" not in text  # never one row over both worlds


def test_older_records_are_read_but_never_join_new_ones(tmp_path, capsys):
    results = tmp_path / "results"
    legacy = _records(results, "moco", None, [0.7, 0.72, 0.74], dataset_fingerprint="f" * 64)
    new = _records(results, "random", WORLD, [0.6, 0.61, 0.62], dataset_fingerprint="f" * 64)
    assert legacy == "f" * 12 and new != legacy and len(load_records(results)[0]) == 6
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    text = (tmp_path / "lb" / "synthetic" / "t.md").read_text()
    assert f"## data `{legacy}`: world not recorded (older record)" in text and f"## data `{new}`: synthetic" in text
    assert "has runs on 2 different data" in capsys.readouterr().err
    error = cli_error(["compare", "--results", str(results), "--task", "t", "moco", "random"], capsys)
    assert f"'moco': {legacy}; 'random': {new}" in error


# ------------------------------------------------------------------------------------------------ compare


def test_compare_refuses_rows_computed_on_different_data(tmp_path, capsys):
    results = tmp_path / "results"
    spec = _records(results, "moco", WORLD, [0.70, 0.64, 0.75])
    xrv = _records(results, "random", WORLD_XRV, [0.66, 0.61, 0.70])
    error = cli_error(["compare", "--results", str(results), "--task", "t", "moco", "random"], capsys)
    assert error == (f"harness: error: t: rows 'moco' and 'random' were computed on different data ('moco': {spec}; "
                     f"'random': {xrv}): runs on different data are never paired")
    assert "no row 'nope'" in cli_error(["compare", "--results", str(results), "--task", "t", "moco", "nope"], capsys)


def test_compare_pairs_only_on_the_data_both_rows_have(tmp_path, capsys):
    results = tmp_path / "results"
    both = _records(results, "moco", WORLD, [0.70, 0.64, 0.75])
    _records(results, "random", WORLD, [0.66, 0.61, 0.70])
    only_moco = _records(results, "moco", WORLD_XRV, [0.95, 0.95, 0.95])  # would be 3/3 wins by +0.29 if mixed
    assert main(["compare", "--results", str(results), "--task", "t", "moco", "random"]) == 0
    out = capsys.readouterr().out
    assert f"data: `{both}` (synthetic world harness.synth v1, seed 0, scale 1, calibration spec)" in out
    assert "| 0.1 | 3 | 0.6967 ± 0.0551 | 0.6567 ± 0.0451 | +0.0400 |" in out and "0.95" not in out
    assert f"'moco' also has runs on data {only_moco}, which the other row lacks (not paired)" in out


# ------------------------------------------------------------------------------------------------ regress


def _entry(**kw) -> dict:
    entry = {"paper": "P", "id": "x", "where": "abstract", "method": "moco", "versus": None, "dataset": "d",
             "task": "t", "protocol": "linear-probe", "fraction": 0.1, "metric": "auroc_macro", "value": 70.0,
             "unit": "percent", "kind": "absolute", "evidence": "ABS", "verified": True, "tolerance": 1.0}
    entry.update(kw)
    return entry


def test_regress_never_averages_or_subtracts_runs_of_different_data(tmp_path):
    from harness.reporting.regress import run_regress

    results = tmp_path / "results"
    spec = _records(results, "moco", WORLD, [0.70, 0.70, 0.70], protocol="linear-probe")
    xrv = _records(results, "moco", WORLD_XRV, [0.60, 0.60, 0.60], protocol="linear-probe")
    _records(results, "random", WORLD_XRV, [0.50, 0.50, 0.50], protocol="linear-probe")
    ref = tmp_path / "ref.yaml"
    ref.write_text(yaml.safe_dump({"data_source": "synthetic", "entries": [
        _entry(),  # moco on two data: its mean over both (0.65) would be reported
        _entry(method="random", value=50.0),  # one data: compared
        _entry(kind="difference", versus="random", value=10.0)]}))  # moco - random: shared data only (xrv)
    code, text = run_regress(results, str(ref))
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| P |")]
    assert [(r[1], r[-2], r[-1]) for r in rows] == [
        ("moco", ", ".join(sorted((spec, xrv))), "different data: not comparable |"),
        ("random", xrv, "pass |"),
        ("moco − random", xrv, "pass |")]  # 0.60 - 0.50 on the xrv world, not 0.65 - 0.50
    assert "0.6500" not in text and code == 0


# -------------------------------------------------------------------------------------------------- sweep


def test_sweep_skips_only_a_record_of_the_same_data(tmp_path, corpus_world):
    from harness.dispatch import sweep
    from tests.test_sweep import _args

    results = tmp_path / "results"
    out = execute(RunRequest(method="random", task="mock", profile="smoke", results_dir=str(results),
                             progress=False))
    argv = ("--methods", "random", "--tasks", "mock", "--fractions", "1", "--seeds", "0", "--profile", "smoke",
            "--data-root", str(corpus_world), "--results", str(results))
    [cell] = sweep.plan_sweep(_args(*argv)).cells
    assert cell.status == "skipped" and cell.detail == str(out.path)
    rec = json.loads(out.path.read_text())
    out.path.unlink()
    for other in ({**rec, "dataset_fingerprint": "0" * 64},  # the same identity on other data
                  {k: v for k, v in rec.items() if k != "world"}):  # an older record: its world is unknown
        path = write_record(results, other)
        [cell] = sweep.plan_sweep(_args(*argv)).cells
        assert cell.status == "pending", other.get("world")
        path.unlink()


# ------------------------------------------------------------------------------------------- calibrations


def test_calibration_without_torchxrayvision_is_one_line_and_writes_nothing(tmp_path, capsys):
    if importlib.util.find_spec("torchxrayvision") is not None:
        pytest.skip("torchxrayvision is installed here")
    out = tmp_path / "world"
    error = cli_error(["data", "synth", "--out", str(out), "--calibration", "torchxrayvision"], capsys)
    assert error == ("harness: error: data synth: calibration 'torchxrayvision' asked for, but the torchxrayvision "
                     "package is not installed (use the default calibration 'spec')")
    assert not out.exists()


def test_calibration_files_missing_or_damaged_name_the_file(tmp_path, monkeypatch, capsys):
    site = use_fake_torchxrayvision(monkeypatch, tmp_path / "site")
    data = site / "torchxrayvision" / "data"
    nih = data / "Data_Entry_2017_v2020.csv.gz"
    saved = nih.read_bytes()
    nih.unlink()  # a torchxrayvision release without the NIH metadata
    argv = ["data", "synth", "--out", str(tmp_path / "w"), "--sources", "nih14", "--scale", "0.01",
            "--calibration", "torchxrayvision"]
    assert cli_error(argv, capsys) == f"harness: error: data synth: calibration 'torchxrayvision': {nih} not found " \
                                      "(this torchxrayvision does not bundle the metadata the calibration reads)"
    nih.write_bytes(saved)
    chexpert = data / "chexpert_train.csv.gz"
    rows = gzip.decompress(chexpert.read_bytes()).decode().replace("Pleural Effusion", "Effusion").encode()
    chexpert.write_bytes(gzip.compress(rows, mtime=0))  # a renamed column
    argv[5] = "chexpert"
    assert cli_error(argv, capsys) == (f"harness: error: data synth: calibration 'torchxrayvision': {chexpert}: "
                                       "no column(s) ['Pleural Effusion']")
    chexpert.write_bytes(b"\x1f\x8b not really gzip")
    assert cli_error(argv, capsys).startswith(f"harness: error: data synth: calibration 'torchxrayvision': "
                                              f"{chexpert}: unreadable (")
    assert not (tmp_path / "w").exists()


def test_bad_synth_options_are_one_line(tmp_path, capsys):
    out = tmp_path / "w"
    assert cli_error(["data", "synth", "--out", str(out), "--scale", "0"], capsys) == \
        "harness: error: data synth: scale must be > 0, got 0.0"
    error = cli_error(["data", "synth", "--out", str(out), "--sources", "mimic", "padchest"], capsys)
    assert error.startswith("harness: error: data synth: unknown source(s) ['padchest']; choose from")
    assert not out.exists()


def test_unknown_calibration_variable_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HARNESS_DATA_ROOT", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_SYNTH_CALIBRATION", "xrv")
    error = cli_error(["data", "check", "chexpert"], capsys)
    assert error == "harness: error: $HARNESS_SYNTH_CALIBRATION must be one of spec, torchxrayvision; got 'xrv'"
    assert not (tmp_path / "cache" / "synth").exists()  # refused before any world is written


def test_broken_world_marker_is_one_line_before_any_data_is_read(tmp_path, corpus_world, capsys):
    root = copy_of(corpus_world, tmp_path, "nih14")
    (root / MARKER).write_text('{"generator": "harness.synth", "seed": ')  # truncated
    results = tmp_path / "results"
    error = cli_error(["run", "--method", "random", "--task", "nih14-cls", "--profile", "smoke", "--data-root",
                       str(root), "--results", str(results)], capsys)
    assert re.fullmatch(rf"harness: error: {re.escape(str(root / MARKER))}: unreadable synthetic-world marker "
                        r"\(.+\)", error), error
    assert not results.exists()
