"""The image cache: decoding of every real format, pixel parity with direct decoding, resume, corruption."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import images
from harness.data.images import decode_image, image_store
from harness.data.schema import DataError

SIZE = 16


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 7 + yy * 3) % 256).astype(np.uint8)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """One file per case the datasets really contain, plus the broken ones."""
    d = tmp_path / "imgs"
    d.mkdir()
    out = {}
    grey = _gradient(40, 32)
    out["jpeg_l"] = d / "view1_frontal.jpg"
    Image.fromarray(grey, "L").save(out["jpeg_l"], quality=90)
    out["jpeg_big"] = d / "big.jpg"  # >= 2x the target: decoded at reduced DCT scale
    Image.fromarray(_gradient(80, 96), "L").save(out["jpeg_big"], quality=90)
    out["png_l"] = d / "00000001_000.png"
    Image.fromarray(grey, "L").save(out["png_l"])
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 128)], axis=-1)
    out["png_rgba"] = d / "00000002_000.png"
    Image.fromarray(rgba, "RGBA").save(out["png_rgba"])
    out["png_16"] = d / "CXR1_1_IM-0001-3001.png"
    Image.fromarray(grey.astype(np.uint16) * 16 + 100).save(out["png_16"])  # 12-bit data in 16 bits
    raw = out["jpeg_l"].read_bytes()
    out["jpeg_truncated"] = d / "truncated.jpg"
    out["jpeg_truncated"].write_bytes(raw[: len(raw) // 2])
    raw = out["png_l"].read_bytes()
    out["png_truncated"] = d / "truncated.png"
    out["png_truncated"].write_bytes(raw[: len(raw) - 30])
    out["empty"] = d / "empty.png"
    out["empty"].write_bytes(b"")
    out["missing"] = d / "missing.png"
    return out


GOOD = ("jpeg_l", "jpeg_big", "png_l", "png_rgba", "png_16")
BAD = ("jpeg_truncated", "png_truncated", "empty", "missing")


def test_decode_formats(files):
    for name in GOOD:
        arr = decode_image(files[name], SIZE)
        assert arr.shape == (SIZE, SIZE) and arr.dtype == np.uint8, name
    # RGBA: alpha ignored, grey content identical to the L version
    assert np.array_equal(decode_image(files["png_rgba"], SIZE), decode_image(files["png_l"], SIZE))
    # 16-bit: scaled by its own range to the full 8-bit range, same picture as the 8-bit file
    a16 = decode_image(files["png_16"], SIZE).astype(int)
    a8 = decode_image(files["png_l"], SIZE).astype(int)
    lo, hi = int(_gradient(40, 32).min()), int(_gradient(40, 32).max())
    assert np.abs(a16 - (a8 - lo) * 255 / (hi - lo)).max() <= 1
    assert Image.open(files["png_16"]).mode.startswith("I")


def test_decode_bad_files_name_the_file(files):
    for name in BAD:
        with pytest.raises(DataError, match="cannot decode image") as err:
            decode_image(files[name], SIZE)
        assert str(files[name]) in str(err.value)
    with pytest.raises(DataError, match="empty"):
        decode_image(files["empty"], SIZE)
    with pytest.raises(DataError, match="not found"):
        decode_image(files["missing"], SIZE)


def _paths(files):
    return [files[k] for k in (*GOOD, *BAD)]


def test_store_matches_direct_decoding_and_flags_bad(files, tmp_path):
    paths = _paths(files)
    store = image_store(paths, SIZE, cache_root=tmp_path / "cache", progress=False)
    assert len(store) == len(paths) and store.size == SIZE and store.shape == (len(paths), SIZE, SIZE)
    for i, name in enumerate(GOOD):
        assert np.array_equal(store[i], decode_image(files[name], SIZE)), name
    assert store[0:3].shape == (3, SIZE, SIZE)
    assert np.array_equal(store[np.array([4, 0])][1], store[0])
    assert store.bad.tolist() == [False] * len(GOOD) + [True] * len(BAD)
    assert not store[len(GOOD):].any()  # bad images are zero-filled
    assert len(store.problems) == len(BAD)
    for problem, name in zip(store.problems, BAD, strict=True):
        assert problem.startswith(f"{files[name]}: ")
    assert "empty" in store.problems[2] and "not found" in store.problems[3]


def test_second_call_trusts_the_cache(files, tmp_path):
    root = tmp_path / "cache"
    paths = _paths(files)
    image_store(paths, SIZE, cache_root=root, progress=False)
    (pixels,) = root.glob("*.u8")
    marked = np.memmap(pixels, dtype=np.uint8, mode="r+", shape=(len(paths), SIZE, SIZE))
    marked[0] = 7  # a valid cache is read, not rebuilt: the mark survives
    marked.flush()
    del marked
    store = image_store(paths, SIZE, cache_root=root, progress=False)
    assert (store[0] == 7).all()
    assert store.bad.sum() == len(BAD)


def test_key_changes_with_files_and_size(files, tmp_path):
    root = tmp_path / "cache"
    paths = _paths(files)
    image_store(paths, SIZE, cache_root=root, progress=False)
    image_store(paths, SIZE * 2, cache_root=root, progress=False)
    Image.fromarray(np.zeros((40, 32), np.uint8), "L").save(files["png_l"])  # edited file
    store = image_store(paths, SIZE, cache_root=root, progress=False)
    assert len(list(root.glob("*.u8"))) == 3
    assert not store[GOOD.index("png_l")].any()


def test_resume_after_killed_build(files, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    paths = [files["png_l"]] * 7 + [files["jpeg_l"]] * 7
    real = images._decode_or_reason
    calls = []

    def dies_at_image_9(job):
        calls.append(job[0])
        if len(calls) == 9:
            raise KeyboardInterrupt  # the build is killed while decoding image 9
        return real(job)

    monkeypatch.setattr(images, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(images, "_decode_or_reason", dies_at_image_9)
    with pytest.raises(KeyboardInterrupt):
        image_store(paths, SIZE, cache_root=root, progress=False)
    (header_path,) = root.glob("*.json")
    assert json.loads(header_path.read_text())["completed"] == 8  # last checkpoint before the kill

    calls.clear()
    monkeypatch.setattr(images, "_decode_or_reason", lambda job: (calls.append(job[0]), real(job))[1])
    store = image_store(paths, SIZE, cache_root=root, progress=False)
    assert len(calls) == len(paths) - 8  # only the unfinished images were decoded again
    for i, p in enumerate(paths):
        assert np.array_equal(store[i], decode_image(p, SIZE)), i
    assert json.loads(header_path.read_text())["completed"] == len(paths)


def test_resume_keeps_finished_rows(files, tmp_path):
    root = tmp_path / "cache"
    paths = _paths(files)
    image_store(paths, SIZE, cache_root=root, progress=False)
    (header_path,) = root.glob("*.json")
    (pixels,) = root.glob("*.u8")
    header = json.loads(header_path.read_text())
    header.update(completed=2, bad=[], problems=[])
    header_path.write_text(json.dumps(header))
    data = np.memmap(pixels, dtype=np.uint8, mode="r+", shape=(len(paths), SIZE, SIZE))
    data[:2] = 9
    data[2:] = 0
    data.flush()
    del data
    store = image_store(paths, SIZE, cache_root=root, progress=False)
    assert (store[:2] == 9).all()  # not redone
    assert np.array_equal(store[3], decode_image(files["png_rgba"], SIZE))
    assert store.bad.sum() == len(BAD) and len(store.problems) == len(BAD)


@pytest.mark.parametrize("damage", ["garbage", "shape", "fingerprint", "short_pixels", "bad_index"])
def test_corrupted_cache_is_rebuilt(files, tmp_path, damage):
    root = tmp_path / "cache"
    paths = _paths(files)
    image_store(paths, SIZE, cache_root=root, progress=False)
    (header_path,) = root.glob("*.json")
    (pixels,) = root.glob("*.u8")
    header = json.loads(header_path.read_text())
    if damage == "garbage":
        header_path.write_text('{"format_version": 1, "shape": [')
    elif damage == "short_pixels":
        pixels.write_bytes(pixels.read_bytes()[:100])
    else:
        if damage == "shape":
            header["shape"] = [len(paths), SIZE, SIZE + 1]
        elif damage == "fingerprint":
            header["fingerprint"] = "0" * 64
        else:
            header["bad"] = [999]
        header_path.write_text(json.dumps(header))
    with pytest.warns(UserWarning, match="rebuilding"):
        store = image_store(paths, SIZE, cache_root=root, progress=False)
    for i, name in enumerate(GOOD):
        assert np.array_equal(store[i], decode_image(files[name], SIZE))
    assert store.bad.sum() == len(BAD)
    assert json.loads(header_path.read_text())["completed"] == len(paths)


def test_workers_pickle_and_empty(files, tmp_path):
    paths = _paths(files)
    serial = image_store(paths, SIZE, cache_root=tmp_path / "a", progress=False)
    parallel = image_store(paths, SIZE, cache_root=tmp_path / "b", progress=False, workers=2)
    assert np.array_equal(serial[:], parallel[:])
    assert parallel.problems == serial.problems
    clone = pickle.loads(pickle.dumps(serial))
    assert np.array_equal(clone[:], serial[:]) and clone.bad.tolist() == serial.bad.tolist()
    empty = image_store([], SIZE, cache_root=tmp_path / "c", progress=False)
    assert len(empty) == 0 and empty[:].shape == (0, SIZE, SIZE)
    assert len(image_store([], SIZE, cache_root=tmp_path / "c", progress=False)) == 0


def test_default_cache_root_follows_env(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "hc"))
    image_store([files["png_l"]], SIZE, progress=False)
    assert len(list((tmp_path / "hc" / "images").glob("*.u8"))) == 1
