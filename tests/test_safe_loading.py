"""Safe loading: nothing on disk can run code, and no cache is trusted without being checked.

- No ``torch.load`` without ``weights_only=True`` (but for the restricted unpickler of
  ``harness.encoders.unpickle``, whose ``pickle_module`` turns every other global into an inert
  placeholder), no ``pickle.load(s)``, no
  ``np.load(allow_pickle=True)``, no ``yaml.load`` / ``unsafe_load`` anywhere in the
  harness or the baselines (a source scan).
- One test per cache that a damaged copy is rebuilt, never used: the image cache and the
  feature cache (``tests/test_images.py`` and ``tests/test_features.py``,
  ``test_corrupted_cache_is_rebuilt``), the pretraining cache (here: a ``done.json``
  pointing at a corrupted ``final.pt``, with and without a readable ``checkpoint.pt``) and
  the mock data (here).
"""

from __future__ import annotations

import ast
import json
import logging
import warnings
from pathlib import Path

import pytest

from tests.test_faults import harness_cache, run_here, same_numbers

ROOT = Path(__file__).resolve().parent.parent


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return ast.unparse(kw.value)
    return None


def test_no_loader_in_the_code_can_execute_code():
    unsafe = []
    for path in sorted([*(ROOT / "harness").rglob("*.py"), *(ROOT / "baselines").rglob("*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call, func in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}: {func}"
            if func.endswith("torch.load") and _kw(call, "weights_only") != "True" and not (
                    # the one exception: the restricted unpickler, where every global outside torch's own
                    # allowlist is an inert placeholder (tests/test_checkpoints.py proves nothing runs)
                    path.relative_to(ROOT).as_posix() == "harness/encoders/unpickle.py"
                    and _kw(call, "pickle_module") == "module"):
                unsafe.append(where + " without weights_only=True")
            elif func in ("pickle.load", "pickle.loads", "cloudpickle.load", "dill.load"):
                unsafe.append(where)
            elif func.endswith(("np.load", "numpy.load")) and _kw(call, "allow_pickle") not in (None, "False"):
                unsafe.append(where + " with allow_pickle")
            elif func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                unsafe.append(where + " (use yaml.safe_load)")
            elif func.endswith("from_pretrained") and _kw(call, "local_files_only") != "True":
                unsafe.append(where + " without local_files_only=True")
    assert unsafe == []


# ------------------------------------------------------------------------------------------ pretraining cache


def _workdir(cache: Path) -> Path:
    [workdir] = list((cache / "pretrain" / "moco").iterdir())
    return workdir


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def test_corrupted_pretraining_cache_is_not_trusted(tmp_path, caplog):
    """One cache damaged three ways in turn; each rerun retrains (or resumes) to the same weights."""
    from harness.storage import file_sha256 as _file_sha256

    with harness_cache(tmp_path / "cache") as cache:
        first = run_here("moco", tmp_path / "r0")
        workdir = _workdir(cache)
        done = json.loads((workdir / "done.json").read_text())
        final = workdir / done["checkpoint"]
        assert done["checkpoint_sha256"] == _file_sha256(final)
        damages = {
            # bit rot inside final.pt: the recorded sha256 catches it; resumes from checkpoint.pt
            "final.pt corrupted": lambda: _flip_bytes(final),
            # a truncated copy of both: checkpoint.pt is set aside and training starts at step 0
            "final.pt and checkpoint.pt truncated": lambda: [p.write_bytes(p.read_bytes()[:1000])
                                                             for p in (final, workdir / "checkpoint.pt")],
            "done.json not JSON": lambda: (workdir / "done.json").write_text("{truncated"),
        }
        for i, (damage, do) in enumerate(damages.items(), start=1):
            do()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="harness"), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                again = run_here("moco", tmp_path / f"r{i}")
            assert any("training again" in r.getMessage() for r in caplog.records), damage
            assert again["pretrain"]["cache_hit"] is False, damage
            same_numbers(first, again)  # bit for bit the weights and metrics of the first run
            if "checkpoint.pt" in damage:
                assert (workdir / "checkpoint.pt.corrupt").is_file()
                assert any("unreadable checkpoint" in str(w.message) for w in caught)
            redone = json.loads((workdir / "done.json").read_text())
            assert redone["checkpoint_sha256"] == _file_sha256(workdir / redone["checkpoint"])
        assert run_here("moco", tmp_path / "r-last")["pretrain"]["cache_hit"] is True  # trusted again


# ------------------------------------------------------------------------------------------ mock data


@pytest.mark.parametrize("damage", ["png truncated", "labels.csv deleted", "labels.csv edited", "manifest lost"])
def test_damaged_mock_data_is_rewritten(damage, tmp_path):
    from harness.data import mock

    with harness_cache(tmp_path / "cache"):
        good = mock.ADAPTER.load()
        root = good.root
        png = root / good.frame["image_id"].iloc[5]
        before = {p.name: p.read_bytes() for p in root.iterdir()}
        if damage == "png truncated":
            png.write_bytes(png.read_bytes()[:40])
        elif damage == "labels.csv deleted":
            (root / "labels.csv").unlink()
        elif damage == "labels.csv edited":
            text = (root / "labels.csv").read_text()
            (root / "labels.csv").write_text(text.replace(",1.0,", ",0.0,", 1))
        else:
            (root / mock.MANIFEST).unlink()
        with pytest.warns(UserWarning, match=r"mock data .*: .*rewriting it"):
            again = mock.ADAPTER.load()
        assert {p.name: p.read_bytes() for p in root.iterdir()} == before
        assert again.fingerprint() == good.fingerprint()
        assert not [p for p in root.parent.iterdir() if p.name.startswith(".mock-")]  # no temp folders left


# ------------------------------------------------------------------------------------------ submitted weights


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pt", "weights.bin", "weights"])
def test_a_code_running_pickle_never_runs_whatever_its_name(name, tmp_path):
    """The format is read from the bytes first (harness.encoders.weights); a pickle is only ever handed to
    torch.load(weights_only=True), and under a .safetensors name not even that."""
    import pickle

    from harness.encoders.errors import SubmissionError
    from harness.encoders.weights import load_state_dict

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / name
    path.write_bytes(pickle.dumps({"conv1.weight": Payload()}, protocol=2))
    with pytest.raises(SubmissionError) as err:
        load_state_dict(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert ("is not a safetensors file: it is a Python pickle" in str(err.value)) == name.endswith(".safetensors")
    assert not marker.exists()
