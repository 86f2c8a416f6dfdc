import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.results import REQUIRED_KEYS, ResultsError, load_records, write_record


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
from tests.test_results import make_record
orig = r.os.fsync
def slow(fd):
    print("writing", flush=True); time.sleep(30); orig(fd)
r.os.fsync = slow
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
