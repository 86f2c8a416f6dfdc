"""Frozen-encoder feature extraction, its on-disk cache, and the frozen-weights guard.

Frozen protocols (linear probe, retrieval, localization, ...) need an encoder's
features of the same images again and again: for every label fraction, seed
and probe hyperparameter. ``extract_features`` computes them once per

    (weights sha256, preprocess, kind, the exact rows of the split)

and reuses them (DINO's ``--dump_features``, with a fully specified key)::

    key = split_cache_key(ctx, "train")
    x = extract_features(ctx.encoder, ctx.data.train.images, ctx.preprocess,
                         device=ctx.device, cache_key=key)       # (N, D) float32

On disk (``cache_root``, default ``$HARNESS_CACHE/features``, ``HARNESS_CACHE``
defaulting to ``~/.cache/harness``), one entry is ``<h>.npy`` plus ``<h>.json``,
``h`` the sha256 of the canonical JSON of the key. The header holds the key,
shape, dtype and the sha256 of the array bytes; an entry whose header does not
parse or disagrees with the request or the data is rebuilt (with a warning),
never trusted. Both files are written to a temporary name and renamed, header
last, so a crash never leaves a valid-looking half entry. Extraction is
resumable: finished chunks of ``chunk_rows`` rows are kept in ``<h>.partial/``
and a restarted run continues after the last one.

Features are stored as float32: the protocols' results must not depend on
whether the cache was hit.

``weights_sha256`` hashes an encoder's state dict (parameters and persistent
buffers such as BatchNorm statistics) in key order; ``assert_unchanged`` is
MoCo's ``sanity_check`` for frozen evaluation: it raises if a protocol changed
a single bit of the encoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.encoders import Preprocess
from harness.encoders.preprocess import to_model_input
from harness.storage import atomic_write, cache_root, file_lock

FORMAT_VERSION = 1
KINDS = ("global", "regions")


class EncoderChangedError(RuntimeError):
    """A frozen-evaluation protocol modified the encoder's weights."""


# --------------------------------------------------------------------------- weights hash


def _tensor_bytes(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return str(t.dtype), tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes()
    a = np.ascontiguousarray(value)
    return str(a.dtype), a.shape, a.tobytes()


def weights_sha256(encoder: object) -> str:
    """sha256 over the encoder's state dict: names, dtypes, shapes and bytes, in sorted key order.

    ``torch.nn.Module`` encoders (and any object with a ``state_dict()`` of
    tensors or arrays) are hashed from that; an object that instead exposes a
    ``weights_sha256`` string attribute is trusted. Anything else raises
    ``TypeError``: an unhashable encoder cannot be cached or guarded.
    """
    state = encoder.state_dict() if callable(getattr(encoder, "state_dict", None)) else None
    if state is None:
        sha = getattr(encoder, "weights_sha256", None)
        if isinstance(sha, str) and sha:
            return sha
        raise TypeError(f"cannot hash the weights of {type(encoder).__name__}: it is not a torch.nn.Module "
                        "and exposes neither state_dict() nor a weights_sha256 string")
    if not isinstance(state, Mapping):
        raise TypeError(f"{type(encoder).__name__}.state_dict() returned {type(state).__name__}, not a mapping")
    h = hashlib.sha256()
    for name in sorted(state):
        dtype, shape, data = _tensor_bytes(state[name])
        h.update(f"{name}|{dtype}|{shape}|".encode())
        h.update(data)
    return h.hexdigest()


def assert_unchanged(encoder: object, sha: str) -> None:
    """Raise ``EncoderChangedError`` unless the encoder's weights hash to ``sha`` (bit-identical)."""
    now = weights_sha256(encoder)
    if now != sha:
        raise EncoderChangedError(f"encoder weights changed during frozen evaluation ({sha[:12]} -> {now[:12]})")


# --------------------------------------------------------------------------- cache key


def split_cache_key(ctx: Any, split: str) -> dict[str, Any]:
    """The part of a cache key that names a split's rows, from an ``EvalContext``.

    The rows are identified by the dataset fingerprint, the image size and a hash
    of the split's ``(dataset, image_id)`` column values, so the key changes
    whenever the images would, and NOT with the label fraction, seed or probe
    arguments (those reuse the same features).
    """
    data = ctx.data
    part = data.split(split)
    frame = (part.whole or part).frame  # a label-fraction subset shares its whole split's features
    rows = hashlib.sha256()
    for col in ("dataset", "image_id"):
        rows.update("\x1f".join(frame[col].astype(str)).encode())
        rows.update(b"\x1e")
    return {"weights_sha256": ctx.weights_sha256, "dataset_fingerprint": data.dataset_fingerprint,
            "images_fingerprint": getattr(data, "images_fingerprint", ""), "image_size": data.image_size,
            "split": split, "rows_sha256": rows.hexdigest(), "n_rows": len(frame)}


def _full_key(cache_key: Mapping[str, Any], preprocess: Preprocess, kind: str, n_rows: int) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, **dict(cache_key), "preprocess": dataclasses.asdict(preprocess), "kind": kind,
            "n_images": n_rows}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def default_cache_root() -> Path:
    return cache_root() / "features"


# --------------------------------------------------------------------------- atomic files


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _array_sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _load_valid(stem: Path, key: dict[str, Any]) -> np.ndarray | None:
    """The cached array if header and data agree with ``key``; None (after a warning) if not."""
    header_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if not header_path.exists():
        return None
    try:
        header = json.loads(header_path.read_text())
        array = np.load(data_path, allow_pickle=False)
        problem = (
            "key differs" if _canonical(header["key"]) != _canonical(key)
            else "shape differs" if list(array.shape) != header["shape"]
            else "dtype differs" if str(array.dtype) != header["dtype"]
            else "data checksum differs" if _array_sha(array) != header["sha256"]
            else None
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    if problem is None:
        return array
    warnings.warn(f"feature cache {stem.name[:16]}: {problem}; rebuilding", stacklevel=4)
    header_path.unlink(missing_ok=True)
    data_path.unlink(missing_ok=True)
    return None


# --------------------------------------------------------------------------- timing


_clock = threading.local()


@contextlib.contextmanager
def extraction_seconds() -> Iterator[list[float]]:
    """Seconds spent in ``extract_features`` (computing or loading) inside the block: ``box[0]``.

    The runner wraps a protocol in it, so records can say how much of ``protocol_s`` was
    feature extraction (``timings["extract_s"]``). Nested blocks each see their own calls.
    """
    box, outer = [0.0], getattr(_clock, "box", None)
    _clock.box = box
    try:
        yield box
    finally:
        _clock.box = outer
        if outer is not None:
            outer[0] += box[0]


# --------------------------------------------------------------------------- extraction


@contextlib.contextmanager
def _eval_mode(encoder: object) -> Iterator[None]:
    """``encoder.eval()`` for the duration, restoring the caller's train/eval mode after."""
    was_training = getattr(encoder, "training", None)
    if callable(getattr(encoder, "eval", None)):
        encoder.eval()
    try:
        yield
    finally:
        if was_training and callable(getattr(encoder, "train", None)):
            encoder.train(True)


def _encode_batch(encoder: Any, images: np.ndarray, preprocess: Preprocess, kind: str, device: str) -> np.ndarray:
    x = to_model_input(images, preprocess, device)  # (B, C, S, S)
    cuda = torch.device(device).type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
        out = encoder.encode_image(x) if kind == "global" else encoder.encode_image_regions(x)
    expected = 2 if kind == "global" else 3  # (B, D) or (B, R, Dr)
    if out.ndim != expected or out.shape[0] != len(images):
        raise ValueError(f"encode_image{'' if kind == 'global' else '_regions'} returned shape {tuple(out.shape)} "
                         f"for a batch of {len(images)}")
    return out.float().cpu().numpy()


def _chunk(encoder: Any, images: Any, rows: range, preprocess: Preprocess, kind: str, batch_size: int,
           device: str, bar: Any) -> np.ndarray:
    parts = []
    for start in range(rows.start, rows.stop, batch_size):  # no drop_last: every image gets a feature
        stop = min(start + batch_size, rows.stop)
        parts.append(_encode_batch(encoder, images[np.arange(start, stop)], preprocess, kind, device))
        bar.update(stop - start)
    return np.concatenate(parts).astype(np.float32)


def compute_features(encoder: Any, images: Any, preprocess: Preprocess, *, kind: str = "global",
                     batch_size: int = 64, device: str = "cpu", progress: bool = True,
                     partial_dir: Path | None = None, chunk_rows: int = 4096) -> np.ndarray:
    """Features of every image, no cache: ``(N, D)`` (global) or ``(N, R, Dr)`` (regions), float32.

    Runs under ``torch.inference_mode()`` with the encoder in eval mode (its
    previous mode restored after), bf16 autocast on CUDA only. With
    ``partial_dir``, finished chunks are saved there and reused on a restart.
    """
    from harness.progress import progress as progress_display

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    n = len(images)
    chunks = []
    with _eval_mode(encoder), torch.inference_mode(), \
            progress_display(n, f"features ({kind})", unit="img", enabled=progress, leave=False) as bar:
        for i, start in enumerate(range(0, n, chunk_rows)):
            rows = range(start, min(start + chunk_rows, n))
            path = partial_dir / f"chunk-{i:06d}.npy" if partial_dir is not None else None
            if path is not None and path.exists():
                try:
                    chunk = np.load(path, allow_pickle=False)
                    if len(chunk) == len(rows):
                        chunks.append(chunk)
                        bar.update(len(rows))
                        continue
                except (OSError, ValueError, EOFError):
                    pass  # a damaged chunk is recomputed
            chunk = _chunk(encoder, images, rows, preprocess, kind, batch_size, device, bar)
            if path is not None:
                _save_npy(path, chunk)
            chunks.append(chunk)
    if not chunks:
        raise ValueError("no images to extract features from")
    return np.concatenate(chunks)


def extract_features(encoder: Any, images: Any, preprocess: Preprocess, *, kind: str = "global",
                     batch_size: int = 64, device: str = "cpu", cache_key: Mapping[str, Any],
                     cache_root: str | Path | None = None, progress: bool = True,
                     chunk_rows: int = 4096) -> np.ndarray:
    """Cached ``compute_features``: computed once per key, then loaded (see the module docstring).

    Args:
        encoder: an ``ImageEncoder`` (``kind="global"``) or ``RegionEncoder`` (``"regions"``).
        images: an ``ImageView`` (``(N, S, S)`` uint8, indexable by an index array).
        preprocess: the encoder card's ``Preprocess``.
        cache_key: what identifies the weights and the rows, typically
            ``split_cache_key(ctx, split)``; it must contain ``weights_sha256``.
            Preprocess, kind and the number of images are added here.
        cache_root: default ``$HARNESS_CACHE/features``.

    Returns:
        float32 ``(N, D)`` or ``(N, R, Dr)``, row ``i`` for ``images[i]``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if "weights_sha256" not in cache_key:
        raise ValueError("cache_key must contain 'weights_sha256' (features of other weights must never be reused)")
    started = time.perf_counter()
    try:
        return _cached(encoder, images, preprocess, kind=kind, batch_size=batch_size, device=device,
                       cache_key=cache_key, cache_root=cache_root, progress=progress, chunk_rows=chunk_rows)
    finally:
        box = getattr(_clock, "box", None)
        if box is not None:
            box[0] += time.perf_counter() - started


def split_features(ctx: Any, split: str, *, kind: str = "global", batch_size: int = 64) -> np.ndarray:
    """The cached features of one split of an ``EvalContext``: the one way protocols get them.

    For a label-fraction subset (``cohort.label_fraction``) the whole split's features are
    extracted (or loaded) under the whole split's key and the subset's rows taken, so every
    fraction shares one extraction.

    Returns:
        float32 ``(N, D)`` (``kind="global"``) or ``(N, R, Dr)`` (``"regions"``), row ``i`` for the split's row ``i``.
    """
    part = ctx.data.split(split)
    whole = part.whole or part
    feats = extract_features(ctx.encoder, whole.images, ctx.preprocess, kind=kind, batch_size=batch_size,
                             device=ctx.device, cache_key=split_cache_key(ctx, split), progress=ctx.progress)
    return feats if part.whole is None else np.ascontiguousarray(feats[part.rows])


def _cached(encoder: Any, images: Any, preprocess: Preprocess, *, kind: str, batch_size: int, device: str,
            cache_key: Mapping[str, Any], cache_root: str | Path | None, progress: bool,
            chunk_rows: int) -> np.ndarray:
    key = _full_key(cache_key, preprocess, kind, len(images))
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    stem = root / digest
    with file_lock(root / f"{digest}.lock"):  # concurrent jobs with the same key: the second one loads
        cached = _load_valid(stem, key)
        if cached is not None:
            return np.ascontiguousarray(cached)
        # the same memory layout on a miss as on a hit, so downstream float sums are identical
        return np.ascontiguousarray(_build_entry(stem, key, encoder, images, preprocess, kind=kind,
                                                 batch_size=batch_size, device=device, progress=progress,
                                                 chunk_rows=chunk_rows))


def _build_entry(stem: Path, key: dict[str, Any], encoder: Any, images: Any, preprocess: Preprocess, *,
                 kind: str, batch_size: int, device: str, progress: bool, chunk_rows: int) -> np.ndarray:
    partial = stem.with_name(f"{stem.name}.partial")
    if partial.exists() and _canonical(_read_json(partial / "key.json")) != _canonical(key):
        shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    (partial / "key.json").write_text(_canonical(key))
    array = compute_features(encoder, images, preprocess, kind=kind, batch_size=batch_size, device=device,
                             progress=progress, partial_dir=partial, chunk_rows=chunk_rows)
    _save_npy(stem.with_suffix(".npy"), array)
    header = {"key": key, "shape": list(array.shape), "dtype": str(array.dtype), "sha256": _array_sha(array)}
    atomic_write(stem.with_suffix(".json"), lambda fh: fh.write(json.dumps(header, indent=1).encode()))
    shutil.rmtree(partial, ignore_errors=True)
    return array


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
