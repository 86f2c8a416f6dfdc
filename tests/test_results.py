import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.results import (
    REQUIRED_KEYS,
    ResultsError,
    data_fingerprint,
    load_records,
    record_name,
    world_label,
    write_record,
)
from harness.synth import GENERATOR_VERSION

WORLD = {"generator": "harness.synth", "generator_version": "1", "seed": 0, "scale": 1.0, "calibration": "spec"}
WORLD_XRV = {**WORLD, "calibration": "torchxrayvision", "calibration_sha256": "ab" * 32}


def make_record(seed: int, **kw) -> dict:
    rec = {k: None for k in REQUIRED_KEYS}
    rec.update(method="m", task="t", task_version=1, fraction=1.0, seed=seed, data_source="synthetic",
               metrics={"auroc_macro": 0.5 + seed / 1000}, main_metric="auroc_macro", ci={}, config={},
               harness_version="0", git_commit="x", packages={}, device="cpu", started_at="now",
               wall_time_s=1.0, split_sha256="s", weights_sha256="w" * 64, dataset_fingerprint="d")
    rec.update(kw)
    return rec


def _writer(args):
    results_dir, start = args
    for seed in range(start, start + 25):
        write_record(results_dir, make_record(seed, config={"pad": "x" * 20000}))


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_writer, [(str(tmp_path), i * 25) for i in range(8)])
    records, problems = load_records(tmp_path)
    assert problems == []
    assert sorted(r["seed"] for r in records) == list(range(200))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_killed_writer_leaves_no_partial_record(tmp_path):
    # A child writes a huge record slowly; we kill -9 it mid-write.
    code = f"""
import sys, time
sys.path.insert(0, {str(os.getcwd())!r})
import harness.results as r
import harness.storage as storage
from tests.test_results import make_record
orig = storage.os.fsync
def slow(fd):
    print("writing", flush=True); time.sleep(30); orig(fd)
storage.os.fsync = slow
r.write_record({str(tmp_path)!r}, make_record(1, config={{"pad": "x" * 5_000_000}}))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.rglob("*.json")) == []
    records, problems = load_records(tmp_path)
    assert records == [] and problems == []


def test_record_with_predictions_and_missing_keys(tmp_path):
    path = write_record(tmp_path, make_record(3), {"scores": np.arange(4.0), "targets": np.ones(4)})
    rec = json.loads(path.read_text())
    npz = np.load(path.with_name(rec["predictions_file"]))
    assert npz["scores"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="lacks key"):
        write_record(tmp_path, {"method": "m"})


def test_read_only_results_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; a file where the directory should be fails the same way
        blocker = tmp_path / "ro"
        blocker.write_text("not a directory")
        target = blocker
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(ResultsError, match="cannot write"):
        write_record(target, make_record(1))
    assert not list(tmp_path.rglob("*.json"))


def test_unreadable_record_is_reported_not_fatal(tmp_path):
    write_record(tmp_path, make_record(1))
    (tmp_path / "synthetic" / "t" / "broken.json").write_text("{not json")
    records, problems = load_records(tmp_path)
    assert len(records) == 1 and len(problems) == 1 and "broken.json" in problems[0]
    time.sleep(0)


def test_records_of_different_data_are_written_side_by_side(tmp_path):
    same_data = make_record(0, world=WORLD, dataset_fingerprint="f" * 64)
    paths = [write_record(tmp_path, same_data),
             write_record(tmp_path, make_record(0, world=WORLD_XRV, dataset_fingerprint="f" * 64)),  # other world
             write_record(tmp_path, make_record(0, world=WORLD, dataset_fingerprint="e" * 64)),  # other data
             write_record(tmp_path, make_record(0, world="real", dataset_fingerprint="f" * 64, data_source="real")),
             write_record(tmp_path, make_record(0))]  # an older record: no world
    assert len(set(paths)) == 5 and all(p.is_file() for p in paths)
    for path in paths:
        rec = json.loads(path.read_text())
        assert path.name == f"{record_name(rec)}.json" and path.stem.endswith(f"__s0__d{data_fingerprint(rec)}")
    assert paths[-1].name == "t__v1__m__wwwwwwwwwwww__f1__s0__dd.json"
    assert write_record(tmp_path, {**same_data, "metrics": {"auroc_macro": 0.9}}) == paths[0]  # same data: replaced
    records, problems = load_records(tmp_path)
    assert problems == [] and len(records) == 5
    assert sorted(r["metrics"]["auroc_macro"] for r in records) == [0.5, 0.5, 0.5, 0.5, 0.9]


def test_data_fingerprint_names_the_data_only():
    fp = data_fingerprint(make_record(0, world=WORLD, dataset_fingerprint="f" * 64))
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    # method, seed, metrics ... are not data: the same fingerprint
    assert data_fingerprint(make_record(3, method="x", world=dict(WORLD), dataset_fingerprint="f" * 64)) == fp
    others = {data_fingerprint(make_record(0, world=w, dataset_fingerprint=d)) for w, d in (
        (WORLD_XRV, "f" * 64), ({**WORLD, "seed": 1}, "f" * 64), ({**WORLD, "generator_version": "2"}, "f" * 64),
        ({**WORLD, "scale": 0.5}, "f" * 64), ("real", "f" * 64), (WORLD, "e" * 64))}
    assert len(others) == 6 and fp not in others
    assert data_fingerprint(make_record(0, dataset_fingerprint="0123456789abcdef")) == "0123456789ab"  # older record
    assert world_label({"world": WORLD}) == "synthetic world harness.synth v1, seed 0, scale 1, calibration spec"
    assert world_label({"world": WORLD_XRV}).endswith("calibration torchxrayvision [abababababab]")
    assert world_label({"world": "real"}) == "real data"
    assert world_label({"world": "self-contained"}) == "self-contained dataset"
    assert world_label({}) == "world not recorded (older record)"


def test_a_run_records_its_world(tmp_path, corpus_world):
    from harness.dispatch.runner import RunRequest, execute
    from harness.synth import MARKER

    mock = execute(RunRequest(method="random", task="mock", profile="smoke", results_dir=str(tmp_path),
                              progress=False))
    assert mock.record["world"] == "self-contained"
    assert re.fullmatch(r"[0-9a-f]{64}", mock.record["dataset_fingerprint"])
    assert mock.path.stem.endswith(f"__d{data_fingerprint(mock.record)}")
    out = execute(RunRequest(method="random", task="mimic-cls", profile="smoke", data_root=str(corpus_world),
                             results_dir=str(tmp_path), progress=False))
    marker = json.loads((corpus_world / MARKER).read_text())
    assert out.record["world"] == {k: marker[k] for k in ("generator", "generator_version", "seed", "scale",
                                                          "calibration")}
    assert out.record["world"] == {"generator": "harness.synth", "generator_version": GENERATOR_VERSION, "seed": 1,
                                   "scale": 0.05,
                                   "calibration": "spec"}
    assert json.loads(out.path.read_text())["world"] == out.record["world"]
