"""Nothing identifying leaves the data root, and nothing touches the network.

Runs tasks end to end on a small synthetic world (with --save-predictions and a leaderboard),
then scans every output a user would share (records, predictions, leaderboards, stdout/stderr)
for report sentences and patient/study/image identifiers. Caches under $HARNESS_CACHE are local
derived data (they index images by path) and are not outputs; see the README's guarantees.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env_extra: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("privacy-world")
    write_world(root, scale=0.2, seed=3, progress=False)
    return root


def identifiers(world: Path) -> set[str]:
    meta = pd.read_csv(world / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    ids = set(meta["dicom_id"]) | set(meta["subject_id"]) | set(meta["study_id"])
    nih = (world / "nih14" / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    ids |= {line.split(",")[0].removesuffix(".png") for line in nih}
    ids |= {line.split(",")[0][:8] for line in nih if line}  # zero-padded NIH Patient IDs (00000001)
    chex = pd.read_csv(world / "chexpert" / "CheXpert-v1.0-small" / "train.csv", dtype=str)
    ids |= {p.split("/")[2] for p in chex["Path"]}  # patientNNNNN
    ids |= {p.stem for p in (world / "openi").rglob("CXR*.png")}  # OpenI parentImage ids
    return ids


def report_sentences(world: Path) -> set[str]:
    sentences = set()
    for path in list((world / "mimic-cxr" / "files").rglob("s*.txt"))[:200]:
        text = " ".join(path.read_text().split())
        sentences |= {s.strip() for s in re.split(r"(?<=\.)\s", text) if len(s.strip()) > 30}
    for path in sorted((world / "openi").rglob("*.xml"))[:100]:  # OpenI FINDINGS / IMPRESSION text
        for part in re.findall(r'Label="(?:FINDINGS|IMPRESSION)"[^>]*>([^<]+)<', path.read_text()):
            sentences |= {s.strip() for s in re.split(r"(?<=\.)\s", " ".join(part.split())) if len(s.strip()) > 30}
    return sentences


def npz_text(path: Path) -> str:
    with np.load(path, allow_pickle=False) as z:  # an object array would raise here: text never saved
        for name in z.files:
            assert z[name].dtype.kind in "biufc", f"{path.name}:{name} holds {z[name].dtype}, not numbers"
    return ""


@pytest.mark.slow
def test_outputs_carry_no_identifiers_or_report_text(world, tmp_path):
    results, lb = tmp_path / "results", tmp_path / "lb"
    logs = []
    for task in ("mimic-cls", "mimic-retrieval", "nih14-loc", "mimic-mm-cls", "openi-retrieval"):
        out = cli("-v", "run", "--method", "random", "--task", task, "--profile", "smoke", "--data-root", str(world),
                  "--results", str(results), "--save-predictions")
        assert out.returncode == 0, out.stderr[-2000:]
        logs += [out.stdout, out.stderr]
    out = cli("leaderboard", "--results", str(results), "--out", str(lb))
    logs += [out.stdout, out.stderr]
    outputs = {f"log {i}": text for i, text in enumerate(logs)}
    for path in [*results.rglob("*"), *lb.rglob("*")]:
        if path.suffix in (".json", ".md"):
            outputs[str(path)] = path.read_text()
        elif path.suffix == ".npz":
            outputs[str(path)] = npz_text(path)
    assert any(p.suffix == ".npz" for p in results.rglob("*"))
    ids, sentences = identifiers(world), report_sentences(world)
    assert len(ids) > 100 and len(sentences) > 20
    pattern = re.compile(r"(?<![0-9A-Za-z.])(" + "|".join(map(re.escape, sorted(ids, key=len, reverse=True)))
                         + r")(?![0-9A-Za-z])")
    for where, text in outputs.items():
        hit = pattern.search(text)
        assert hit is None, f"identifier {hit.group(0)!r} in {where}"
        leaked = [s for s in sentences if s in text]
        assert not leaked, f"report text {leaked[0][:40]!r}... in {where}"


@pytest.mark.slow
def test_runs_without_network(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent("""
        import socket
        def _refuse(*args, **kwargs):
            raise OSError("network access attempted during a harness run")
        socket.socket.connect = _refuse
        socket.socket.connect_ex = _refuse
        socket.create_connection = _refuse
        socket.getaddrinfo = _refuse
    """))
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(guard), str(ROOT)]), "HF_HUB_OFFLINE": "0"}
    out = cli("-q", "run", "--method", "imagenet", "--task", "mock", "--profile", "smoke", "--results",
              str(tmp_path / "r"), env_extra=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imagenet on mock" in out.stdout
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           env={**os.environ, **env}, capture_output=True, text=True)
    assert "network access attempted" in probe.stderr  # the guard really is active in such a process
