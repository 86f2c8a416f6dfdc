"""Faults: kill -9 at every stage, concurrent runs, a full or read-only disk; and determinism.

- A run killed with SIGKILL while pretraining (MoCo smoke: after its first checkpoint),
  while extracting features, or while fitting the probe leaves no record; rerun, it
  resumes from what is on disk and its record's metrics equal an uninterrupted run's.
- Eight ``harness run`` processes writing to one results directory (and building the
  same mock data and image cache at once) lose and corrupt nothing.
- A full disk (a 64 KiB tmpfs; RLIMIT_FSIZE where mounting is impossible) or a
  read-only results directory is one clear error line, and leaves no partial record
  and no orphan predictions file.
- A crashed job in a sweep does not stop the others: ``tests/test_sweep.py``
  (``test_sweep_reports_the_failing_cell_completes_the_others_then_skips``) and
  ``tests/test_dispatch.py`` (``test_failed_run_is_reported_and_the_others_complete``).
- Determinism: the same seed gives identical metrics on a rerun (here) and across the
  debug and local executors (``tests/test_dispatch.py``); the record says what is and
  is not bitwise reproducible on the device it ran on.

Slow (``-m slow``): the three kill tests and the eight concurrent runs (each starts
Python processes that import torch).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import determinism, load_records

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("metrics", "ci", "weights_sha256", "split_sha256", "dataset_fingerprint", "n", "details")


@contextlib.contextmanager
def harness_cache(path: Path):
    """Point every harness cache (images, features, pretraining, mock data) at ``path``."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = old


def run_args(method: str, results: Path, seed: int = 0, *extra: str) -> list[str]:
    return ["-q", "run", "--method", method, "--task", "mock", "--profile", "smoke", "--seed", str(seed),
            "--results", str(results), *extra]


def run_here(method: str, results: Path, seed: int = 0, *extra: str) -> dict:
    """One run in this process; its record."""
    assert main(run_args(method, results, seed, *extra)) == 0
    records, problems = load_records(results)
    assert problems == []
    [rec] = [r for r in records if r["method"] == method and r["seed"] == seed]
    return rec


def same_numbers(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert a[key] == b[key], key


def same_threads() -> dict[str, str]:
    """Environment giving a child this process's torch thread count: CPU results are bitwise only
    for the same count (float sums split differently), and a probe's validation choice can turn
    such rounding into a different metric."""
    import torch

    return {"OMP_NUM_THREADS": str(torch.get_num_threads())}


# ------------------------------------------------------------------------------------------ kill -9

KILL_POINTS = {
    # after the first mid-run checkpoint (MoCo smoke: 4 steps, checkpoint every 2)
    "pretraining": """
        from baselines.common import train as T
        _save = T.Trainer.save
        def save(self, sampler=None):
            _save(self, sampler)
            if 0 < self.step < self.config.steps:
                stop()
        T.Trainer.save = save
    """,
    # after the first batch of features has been computed
    "feature extraction": """
        import harness.features as F
        _encode = F._encode_batch
        def encode(*args, **kwargs):
            out = _encode(*args, **kwargs)
            stop()
            return out
        F._encode_batch = encode
    """,
    # features cached, probe being fitted
    "probe": """
        import harness.protocols.linear_probe as LP
        def fit(*args, **kwargs):
            stop()
        LP.fit_probe = fit
    """,
}


def killed_run(argv: list[str], point: str, cache: Path) -> None:
    """Run the CLI in a child that stops at ``point``; SIGKILL it there."""
    code = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, {root!r})
        def stop():
            print("KILL-POINT", flush=True)
            time.sleep(600)
    """).format(root=str(ROOT)) + textwrap.dedent(KILL_POINTS[point]) + textwrap.dedent(f"""
        from harness.cli import main
        sys.exit(main({argv!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, **same_threads(), "HARNESS_CACHE": str(cache)}, cwd=ROOT)
    timer = threading.Timer(600, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "KILL-POINT", f"the child ended before {point}: {line!r} rc={proc.poll()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        timer.cancel()
        proc.stdout.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """MoCo smoke on mock, seed 0, never interrupted, in its own cache."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    with harness_cache(tmp / "cache"):
        return run_here("moco", tmp / "results")


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_rerun_resumes_to_the_uninterrupted_result(point, uninterrupted, tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    killed_run(run_args("moco", results), point, cache)
    assert not list(results.rglob("*.json")) and not list(results.rglob("*.npz"))  # nothing half-written
    workdirs = list((cache / "pretrain" / "moco").iterdir())
    assert len(workdirs) == 1
    if point == "pretraining":
        assert (workdirs[0] / "checkpoint.pt").is_file() and not (workdirs[0] / "done.json").exists()
    else:
        assert (workdirs[0] / "done.json").is_file()  # pretraining had finished: the rerun must not redo it
    with harness_cache(cache):
        rec = run_here("moco", results)
    same_numbers(rec, uninterrupted)
    assert rec["pretrain"]["cache_hit"] is (point != "pretraining")
    steps = [json.loads(line)["step"] for line in (workdirs[0] / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # resumed: no step logged twice


# ------------------------------------------------------------------------------------------ concurrency


@pytest.mark.slow
def test_eight_concurrent_runs_lose_and_corrupt_nothing(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    env = {**os.environ, **same_threads(), "HARNESS_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-m", "harness", *run_args("random", results, seed)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(8)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err[-1500:] for _, err in outs]
    records, problems = load_records(results)
    assert problems == [] and sorted(r["seed"] for r in records) == list(range(8))
    assert not [p for p in results.rglob("*") if p.name.startswith(".")]  # no temp files left
    assert len({r["weights_sha256"] for r in records}) == 1  # one encoder, eight evaluation seeds
    # the caches built concurrently (mock data, image cache) are the ones a lone run builds
    with harness_cache(tmp_path / "alone"):
        alone = run_here("random", tmp_path / "alone-results", 5)
    same_numbers(next(r for r in records if r["seed"] == 5), alone)


# ------------------------------------------------------------------------------------------ full / read-only disk


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A 64 KiB tmpfs at ``path`` (root only); None when it cannot be mounted."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)), "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Write until the filesystem is full, then free ``leave`` bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def assert_nothing_partial(results: Path) -> None:
    left = [p for p in results.rglob("*") if p.is_file() and p.name != "filler"]
    assert left == [], left


def test_full_disk_is_one_clear_error_and_no_partial_record(tmp_path, capsys):
    with harness_cache(tmp_path / "cache"):
        warm = run_here("random", tmp_path / "warm", 0, "--save-predictions")  # caches built elsewhere
        with tmpfs(tmp_path / "full") as results:
            if results is not None:
                fill(results, leave=4096)  # room for the predictions file, not for the record after it
                assert main(run_args("random", results, 0, "--save-predictions")) == 2
                err = capsys.readouterr().err.strip().splitlines()
                assert err[-1].startswith("harness: error: cannot write ") and "No space left on device" in err[-1]
                assert err[-1].split(": ")[2].endswith(".json")  # it failed at the record, after the .npz
                assert_nothing_partial(results)
                return
    # no mount possible: a file-size limit makes the record write fail with EFBIG instead
    results = tmp_path / "limited"
    code = (f"import resource, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500)); "
            f"from harness.cli import main; sys.exit(main({run_args('random', results, 0)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 2 and "File too large" in out.stderr and "Traceback" not in out.stderr
    assert warm["seed"] == 0 and not list(results.rglob("*.json"))


def test_read_only_results_dir_is_one_clear_error(tmp_path, capsys):
    with harness_cache(tmp_path / "cache"), tmpfs(tmp_path / "ro", "ro") as results:
        if results is None:  # root ignores permission bits; a file in the way fails the same way
            results = tmp_path / "ro-file"
            results.write_text("not a folder")
        assert main(run_args("random", results, 0)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("harness: error: cannot write results under ")
        assert "Read-only file system" in err[-1] or "Not a directory" in err[-1]
        if results.is_dir():
            assert_nothing_partial(results)


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_reruns_to_identical_numbers_and_the_record_says_so(tmp_path):
    runs = []
    for i in range(2):
        with harness_cache(tmp_path / f"cache{i}"):  # nothing reused: every cache rebuilt
            runs.append(run_here("random", tmp_path / f"results{i}", 1, "--device", "cpu"))
    same_numbers(*runs)
    assert runs[0]["determinism"] == determinism("cpu")
    assert runs[0]["determinism"]["bitwise_reproducible"] is True and runs[0]["determinism"]["not_bitwise"] == []
    cuda = determinism("cuda:0")
    assert cuda["bitwise_reproducible"] is False
    assert any("cuDNN" in s for s in cuda["not_bitwise"]) and any("feature extraction" in s
                                                                   for s in cuda["not_bitwise"])
    assert "bootstrap confidence intervals" in cuda["seeded"]
