"""The image cache: every image of a cohort decoded once into a memory-mapped uint8 array.

Chest X-rays arrive as JPEG (MIMIC-CXR-JPG, CheXpert) or PNG (NIH, OpenI) at
300 px to 3,000 px per side; decoding them is the slowest step of every epoch
and every feature extraction. ``image_store(paths, size)`` decodes each file
once with ``decode_image`` and keeps the result as a raw ``(N, size, size)``
uint8 ``np.memmap`` file, reused by every later run with the same files::

    store = image_store(records.frame["path"], size=224)
    batch = store[np.array([3, 1, 4])]          # (3, 224, 224) uint8
    assert not store.bad[3], store.problems

On disk (under ``cache_root``, default ``$HARNESS_CACHE/images`` with
``HARNESS_CACHE`` defaulting to ``~/.cache/harness``), one cache is two files
named by its key::

    <key>.u8     N * size * size bytes, row i = image i
    <key>.json   header: format version, shape, dtype, size, fingerprint,
                 completed count, indices of bad files and their problems

The key is a fingerprint over the ordered paths, each file's size and mtime,
the image size and the format version, so an edited, added or removed file
gives a new cache rather than stale pixels.

Robustness:

- **Resumable.** Images are written in order and the header's ``completed``
  count is rewritten (after flushing the pixels) every few hundred images, so
  a killed build restarts at the last checkpoint instead of at zero.
- **Validated.** A header that does not parse, or whose version, shape, dtype,
  size or fingerprint disagree with what is asked for, or a pixel file of the
  wrong length, is treated as corrupt: the cache is rebuilt from scratch (with
  a warning), never trusted.
- **Atomic.** The header is written to a temporary file and renamed, so a
  crash never leaves a half-written header.
- **Bad images do not stop a build.** A file that is missing, empty, truncated
  or otherwise undecodable becomes an all-zero image, flagged in ``bad`` and
  described (``"path: reason"``) in ``problems``; callers decide whether to
  drop those rows (and count them) or fail.
- **Concurrent builders** of the same cache (local submitit jobs) serialise on
  an ``flock`` lock file; the second one finds the finished cache.

Decoding (``decode_image``): one channel (RGB/RGBA/LA/P -> L by Pillow's
ITU-R 601 luma, alpha ignored; 16-bit or 32-bit grey -> 8-bit by the image's
own min..max range, because DICOM exports store 12-, 15- or 16-bit data in
16-bit PNGs without saying which), then a resize of the whole image to
``size x size`` (no crop, so the full field of view is kept; aspect ratio is
not) with Pillow's antialiased bilinear filter (what torchvision's
``Resize(antialias=True)`` does). JPEGs are decoded at a reduced DCT scale
when they are at least twice the target size (``Image.draft``), which makes
the full-resolution CheXpert/MIMIC files several times cheaper to cache.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from harness.data.schema import DataError
from harness.progress import progress as progress_display
from harness.storage import atomic_write, file_lock
from harness.storage import cache_root as storage_root

FORMAT_VERSION = 1
CHECKPOINT_EVERY = 256  # images between header checkpoints of a build (resume granularity)
POOL_WINDOW = 2048  # images handed to the worker pool at a time


# --------------------------------------------------------------------------- decoding


def _to_luma8(im: Image.Image) -> np.ndarray | Image.Image:
    """One 8-bit channel as a PIL image, or a float32 array in [0, 255] for high-bit-depth input."""
    if im.mode == "L":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return (arr - lo) * scale
    return im.convert("L")  # RGB, RGBA, LA, P, 1, CMYK, YCbCr: luma, alpha dropped


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file to a ``(size, size)`` uint8 grey array (see module docstring).

    Raises:
        DataError: the file is missing, empty, truncated or not an image; the
            message names the file and the reason.
    """
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("L", (size, size))  # DCT-domain downscale: both sides stay >= size
            im.load()  # force the full decode here so truncation raises inside the try
            grey = _to_luma8(im)
            if isinstance(grey, np.ndarray):
                resized = Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR)
                return np.clip(np.rint(np.asarray(resized)), 0, 255).astype(np.uint8)
            out = grey.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(out, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        if isinstance(e, FileNotFoundError):
            reason = "file not found"
        elif _is_empty(path):
            reason = "file is empty (0 bytes)"
        else:
            reason = f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: cannot decode image: {reason}") from e


def _is_empty(path: str | Path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _decode_or_reason(job: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    """Worker body: pixels, or ``None`` and the reason (exceptions would kill the pool map)."""
    path, size = job
    try:
        return decode_image(path, size), ""
    except DataError as e:
        return None, str(e).split(": cannot decode image: ", 1)[-1]


def decode_results(paths: Sequence[str | Path], size: int, workers: int = 0) -> Iterator[str]:
    """For each path, in order: ``""`` when it decodes (with ``decode_image``), else the reason it does not.

    What ``harness data check`` runs over a whole dataset; ``workers`` > 0 decodes in that many
    spawned processes (the image cache's pool, one window at a time).
    """
    decoded = _decoded([(str(p), size) for p in paths], workers)
    try:
        for _, reason in decoded:
            yield reason
    finally:
        decoded.close()


# --------------------------------------------------------------------------- the store


class ImageStore:
    """``(N, size, size)`` uint8 grey images backed by a read-only memory map.

    Index it like a numpy array: ``store[i]`` is ``(size, size)``, ``store[a:b]``
    or ``store[index_array]`` is ``(n, size, size)``. ``bad[i]`` marks images
    that could not be decoded (their pixels are zero); ``problems`` says why.
    Pickling sends the file name, not the pixels (safe for DataLoader workers
    and submitit jobs).
    """

    def __init__(self, pixels_path: Path | None, n: int, size: int, bad: np.ndarray, problems: list[str]):
        self.pixels_path = pixels_path
        self.size = size
        self.bad = bad
        self.problems = problems
        self._n = n
        self._data = self._open()

    def _open(self) -> np.ndarray:
        if self._n == 0 or self.pixels_path is None:
            return np.zeros((0, self.size, self.size), dtype=np.uint8)
        return np.memmap(self.pixels_path, dtype=np.uint8, mode="r", shape=(self._n, self.size, self.size))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._n, self.size, self.size)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self._data[idx])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_data"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._data = self._open()

    def __repr__(self) -> str:
        n_bad = int(self.bad.sum())
        return f"ImageStore(n={self._n}, size={self.size}, bad={n_bad}, file={self.pixels_path})"


# --------------------------------------------------------------------------- fingerprint and header


def fingerprint(paths: Sequence[str], size: int) -> str:
    """sha256 over (format version, size, and each path with its byte size and mtime)."""
    h = hashlib.sha256(f"harness-image-cache-v{FORMAT_VERSION}\0{size}\0{len(paths)}\0".encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{p}\0{stamp}\0".encode())
    return h.hexdigest()


def _expected_header(n: int, size: int, fp: str) -> dict:
    return {"format_version": FORMAT_VERSION, "shape": [n, size, size], "dtype": "uint8",
            "size": size, "fingerprint": fp}


def _read_valid_header(header_path: Path, pixels_path: Path, expected: dict) -> tuple[dict | None, str]:
    """The header if it can be trusted, else ``(None, why not)``; ``(None, "")`` when there is none."""
    if not header_path.exists():
        return None, ""
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"header does not parse ({type(e).__name__})"
    if not isinstance(header, dict):
        return None, "header is not a JSON object"
    for key, value in expected.items():
        if header.get(key) != value:
            return None, f"header {key}={header.get(key)!r}, expected {value!r}"
    n = expected["shape"][0]
    completed, bad = header.get("completed"), header.get("bad")
    if not isinstance(completed, int) or not 0 <= completed <= n:
        return None, f"header completed={completed!r} is not in [0, {n}]"
    if not isinstance(bad, list) or not all(isinstance(i, int) and 0 <= i < completed for i in bad):
        return None, "header bad indices are malformed"
    if not isinstance(header.get("problems"), list) or len(header["problems"]) != len(bad):
        return None, "header problems do not match bad indices"
    if not pixels_path.exists() or pixels_path.stat().st_size != n * expected["size"] ** 2:
        return None, "pixel file is missing or has the wrong length"
    return header, ""


def _write_header(header_path: Path, header: dict) -> None:
    """Atomically: readers see the old header or the new one, never a torn one."""
    atomic_write(header_path, json.dumps(header).encode())


# --------------------------------------------------------------------------- build


def _decoded(jobs: list[tuple[str, int]], workers: int) -> Iterator[tuple[np.ndarray | None, str]]:
    """Decode in order, in-process or with a process pool (ordered, so a resume point is a prefix).

    Jobs go to the pool one window at a time, so decoded images never pile up in
    memory and an interrupted build cancels at most a window of pending work.
    Workers are spawned, not forked: forking a process that runs torch threads
    can deadlock.
    """
    if workers <= 0 or len(jobs) < 2:
        yield from map(_decode_or_reason, jobs)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for start in range(0, len(jobs), POOL_WINDOW):
            yield from pool.map(_decode_or_reason, jobs[start:start + POOL_WINDOW], chunksize=16)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _build(paths: list[str], size: int, header: dict, pixels_path: Path, header_path: Path,
           progress: bool, workers: int) -> dict:
    """Fill rows ``header["completed"]:`` of the pixel file; checkpoint the header as it goes."""
    n, start = len(paths), header["completed"]
    mode = "r+" if start > 0 else "w+"
    data = np.memmap(pixels_path, dtype=np.uint8, mode=mode, shape=(n, size, size))
    jobs = [(p, size) for p in paths[start:]]
    bar = progress_display(n, f"image cache {size}px", unit="img", initial=start, enabled=progress)
    decoded = _decoded(jobs, workers)
    try:
        for i, (pixels, reason) in enumerate(decoded, start=start):
            if pixels is None:
                data[i] = 0
                header["bad"].append(i)
                header["problems"].append(f"{paths[i]}: {reason}")
            else:
                data[i] = pixels
            header["completed"] = i + 1
            bar.update(1)
            if (i + 1) % CHECKPOINT_EVERY == 0:
                data.flush()  # pixels reach the file before the header claims them
                _write_header(header_path, header)
        data.flush()
        _write_header(header_path, header)
    finally:
        decoded.close()  # stops the worker pool at once if the build is interrupted
        bar.close()
        del data
    return header


def image_store(paths: Sequence[str | Path], size: int, *, cache_root: Path | None = None,
                progress: bool = True, workers: int = 0) -> ImageStore:
    """The cached ``(N, size, size)`` uint8 images of ``paths`` (in order), built on first use.

    Args:
        paths: image files; row i of the store is ``paths[i]``.
        size: side of the square images.
        cache_root: folder of the cache files (default ``$HARNESS_CACHE/images``).
        progress: show the build's progress (``harness.progress``: a bar on a terminal, lines in a log).
        workers: decoding processes (0: in this process).

    Returns:
        An ``ImageStore``; undecodable files are zero images flagged in ``bad``.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    paths = [str(p) for p in paths]
    n = len(paths)
    fp = fingerprint(paths, size)
    root = Path(cache_root) if cache_root is not None else storage_root() / "images"
    root.mkdir(parents=True, exist_ok=True)
    key = f"{fp[:32]}-s{size}"
    pixels_path, header_path = root / f"{key}.u8", root / f"{key}.json"
    expected = _expected_header(n, size, fp)
    with file_lock(root / f"{key}.lock"):
        header, why = _read_valid_header(header_path, pixels_path, expected)
        if header is None:
            if why:
                warnings.warn(f"image cache {header_path}: {why}; rebuilding it", stacklevel=2)
            header = {**expected, "completed": 0, "bad": [], "problems": []}
            pixels_path.unlink(missing_ok=True)
            if n == 0:
                pixels_path.touch()
                _write_header(header_path, header)
        if header["completed"] < n:
            header = _build(paths, size, header, pixels_path, header_path, progress, workers)
    bad = np.zeros(n, dtype=bool)
    bad[header["bad"]] = True
    store = ImageStore(pixels_path, n, size, bad, list(header["problems"]))
    store.source_fingerprint = fp  # identifies the pixels (paths, sizes, mtimes): feature/pretrain cache keys use it
    return store


class ImageView:
    """Rows of an image store, indexable like a ``(N, S, S)`` uint8 array: the one row view of a store.

    A split's images, a subset of them (the boxed test images of localization, a label fraction),
    a method's pretraining rows: all are ``ImageView``s over the one store the cohort built.
    """

    def __init__(self, store, rows: np.ndarray) -> None:
        self.store, self.rows = store, rows
        self.size: int = store.size

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, rows: np.ndarray) -> ImageView:
        """The view of ``rows`` (positions in this view), in that order."""
        return ImageView(self.store, self.rows[np.asarray(rows, dtype=np.int64)])

    def __getitem__(self, idx) -> np.ndarray:
        rows = self.rows[idx]
        if np.ndim(rows) == 0:
            return self.store[int(rows)]
        order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memmap
        out = self.store[rows[order]]
        result = np.empty_like(out)
        result[order] = out
        return result
