"""The embedding fingerprint: a hash of an encoder's outputs on a fixed reference batch.

Two people who score "the same" public model can differ in the weights file, the
preprocessing or the library version without noticing. Every result record (and
``harness submit --check``) therefore carries ``embedding_fingerprint(encoder)``:

1. the **reference batch**, ``reference_batch.npy`` next to this module: 8 grey 64 x 64
   uint8 images (smooth gradients, two lung-like ellipses and seeded noise; written once by
   ``render_reference_batch``, pinned by ``REFERENCE_SHA256``);
2. prepared exactly as the encoder's card says (``harness.encoders.preprocess.to_model_input``:
   resized from 64 px to the card's size, cropped, scaled, normalised), run through
   ``encode_image`` in eval mode, float32, no autocast (and ``encode_text`` on
   ``REFERENCE_TEXTS`` when the encoder has text);
3. each output row **L2-normalised, rounded to 3 decimals** (``DECIMALS``; ``-0.000`` written
   ``0.000``), written as text, and hashed with sha256.

The record stores ``sha256`` (the first 16 hex characters over every part), the parts, the
batch's digest and the rounding rule. Equal fingerprints mean the same outputs to 3
decimals on those images: the same model with the same preprocessing. A different thread
count, device or library version can move a value across a rounding boundary (rarely: the
outputs agree to about 1e-6 on CPU), so unequal fingerprints say "look", not "different".
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = Path(__file__).with_name("reference_batch.npy")
REFERENCE_SHA256 = "149458738a2588a852f956573e727843abb9802a44dd36f41e3a5bc6c69e25e2"
REFERENCE_SHAPE = (8, 64, 64)
REFERENCE_TEXTS = ("no acute cardiopulmonary process", "small left pleural effusion", "cardiomegaly",
                   "right upper lobe consolidation")
DECIMALS = 3
VERSION = "reference-v1"


def render_reference_batch(seed: int = 17) -> np.ndarray:
    """The reference batch as first written (integer-exact but for the float noise; the file is the truth)."""
    rng = np.random.default_rng(seed)
    n, h, w = REFERENCE_SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty(REFERENCE_SHAPE, dtype=np.uint8)
    for i in range(n):
        base = 40 + 25 * i + 60 * (yy / h) + 30 * np.sin(xx / (4 + i))
        for cx in (0.3 * w, 0.7 * w):  # two dark "lungs"
            inside = ((xx - cx) / (0.16 * w + i)) ** 2 + ((yy - 0.5 * h) / (0.32 * h)) ** 2 < 1
            base = np.where(inside, base * 0.45, base)
        out[i] = np.clip(base + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=1)
def reference_batch() -> np.ndarray:
    """The shipped reference batch, checked against ``REFERENCE_SHA256``.

    Raises:
        RuntimeError: the file is missing or not the one this version ships.
    """
    try:
        raw = REFERENCE_FILE.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"the reference batch {REFERENCE_FILE} is missing ({exc.strerror}): reinstall "
                           "the harness") from None
    if hashlib.sha256(raw).hexdigest() != REFERENCE_SHA256:
        raise RuntimeError(f"the reference batch {REFERENCE_FILE} is not the one shipped (sha256 differs): "
                           "fingerprints computed on it would not compare; reinstall the harness")
    import io

    return np.load(io.BytesIO(raw), allow_pickle=False)


def _digest(out: Any) -> str:
    v = out.detach().float().cpu().numpy().astype(np.float64).reshape(len(out), -1)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    rounded = np.round(v, DECIMALS) + 0.0  # -0.0 + 0.0 is 0.0: one spelling of zero
    text = f"{v.shape}\n" + "\n".join(",".join(f"{x:.{DECIMALS}f}" for x in row) for row in rounded)
    return hashlib.sha256(text.encode()).hexdigest()


def embedding_fingerprint(encoder: Any, device: str = "cpu") -> dict[str, Any]:
    """The fingerprint of ``encoder`` with its card's preprocessing (see the module docstring).

    Args:
        encoder: a harness encoder (``encode_image``, a ``card``); optionally ``encode_text``.
        device: where the encoder is (the batch is moved there).

    Returns:
        ``{"sha256", "image", "text", "batch", "rounding"}`` (``text`` None without ``encode_text``).
    """
    import torch

    from harness.encoders.capabilities import capabilities
    from harness.encoders.preprocess import to_model_input

    batch = reference_batch().copy()  # the cached array is never handed out
    was_training = getattr(encoder, "training", False)
    if callable(getattr(encoder, "eval", None)):
        encoder.eval()
    try:
        with torch.inference_mode():
            image = _digest(encoder.encode_image(to_model_input(batch, encoder.card.preprocess, device)))
            text = _digest(encoder.encode_text(list(REFERENCE_TEXTS))) if "text" in capabilities(encoder) else None
    finally:
        if was_training and callable(getattr(encoder, "train", None)):
            encoder.train(True)
    combined = hashlib.sha256(f"{VERSION}|{image}|{text}".encode()).hexdigest()[:16]
    return {"sha256": combined, "image": image[:16], "text": text[:16] if text else None,
            "batch": f"{VERSION}: {REFERENCE_SHAPE[0]}x{REFERENCE_SHAPE[1]}x{REFERENCE_SHAPE[2]} uint8, sha256 "
                     f"{REFERENCE_SHA256[:12]}",
            "rounding": f"each output row L2-normalised, rounded to {DECIMALS} decimals"}
