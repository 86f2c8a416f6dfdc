"""The two MSN references and where a config stands between them.

``msn`` and ``msn-ehr`` follow the MSN+EHR authors' code (nyuad-cai/CXR-EHR-MSN b3755c0,
built on lightly 1.4.21), which departs from the original MSN (facebookresearch/msn,
``src/msn_train.py``, ``src/deit.py``, ``configs/pretrain/msn_vits16.yaml``). Four of the
departures change what is learned and are named config settings, so either reference can be
run (``MSNConfig``; the paper profile = the authors' code):

=====================  ============================  =========================================
setting                CXR-EHR-MSN (default)         facebookresearch/msn (``ORIGINAL_MSN``)
=====================  ============================  =========================================
``train_prototypes``   false: ``prototypes.data``    true: trained, no weight decay
``momentum_schedule``  constant 0.996                linear 0.996 -> 1.0 over 1.25 x the run
``weight_decay_on``    all: every parameter          weights: not biases, 1-D, ``bn``, prototypes
``masking``            cxr-ehr-msn: every anchor     msn: one permutation per batch, the random
                       view, per image, CLS counted  anchor view only (focal views unmasked)
=====================  ============================  =========================================

The rest (``FIXED_DIFFERENCES``) is what the harness does not offer as a setting; the card
lists both (``differences_from_msn``).
"""

from __future__ import annotations

from typing import Any

ORIGINAL_MSN: dict[str, Any] = {"train_prototypes": True, "momentum": 0.996, "momentum_schedule": "linear",
                                "momentum_final": 1.0, "weight_decay_on": "weights", "masking": "msn"}
"""``--set`` these on any profile to follow facebookresearch/msn on the four named settings."""

_SETTING_TEXT = {
    "train_prototypes": {False: "prototypes frozen at their init", True: "prototypes trained"},
    "momentum_schedule": {"constant": "EMA momentum held at {momentum}",
                          "linear": "EMA momentum ramped linearly {momentum} -> {momentum_final} over 1.25 x the run"},
    "weight_decay_on": {"all": "weight decay on every parameter",
                        "weights": "no weight decay on biases, 1-D parameters and prototypes"},
    "masking": {"cxr-ehr-msn": "every anchor view masked per image, the CLS counted among the kept tokens",
                "per-image": "every anchor view masked per image",
                "msn": "one mask per batch, on the random anchor view only"},
}

FIXED_DIFFERENCES = (
    "projection head D-4D-D with BatchNorm and no bias before it (lightly MSNProjectionHead; MSN: 2048 hidden, "
    "256 out, biases)",
    "no colour jitter, grey-scale or blur (MSN: colour distortion 0.5, blur p 0.5)",
    "AdamW with constant weight decay (MSN: cosine 0.04 -> 0.4)",
    "lr cosine to 0 over the run (MSN: 15 warm-up epochs from 2e-4 to 1e-3, cosine to 1e-6 over 1.25 x the run)",
    "no gradient clipping (MSN: 3.0)",
    "under DDP the prototypes' gradient is averaged over ranks (MSN: summed)",
)


def differences_from_msn(cfg: Any) -> tuple[str, ...]:
    """Every way ``cfg`` departs from facebookresearch/msn's recipe, for the method card.

    Args:
        cfg: an ``MSNConfig`` (or ``MSNEHRConfig``).

    Returns:
        The named settings that differ from ``ORIGINAL_MSN`` (as they are in ``cfg``), then
        ``FIXED_DIFFERENCES``.
    """
    named = []
    for key, text in _SETTING_TEXT.items():
        value = getattr(cfg, key)
        keys = ("momentum", key, "momentum_final") if key == "momentum_schedule" else (key,)
        if any(getattr(cfg, k) != ORIGINAL_MSN[k] for k in keys):
            named.append(text[value].format(momentum=cfg.momentum, momentum_final=cfg.momentum_final)
                         + f" ({key}={_plain(value)})")
    return (*named, *FIXED_DIFFERENCES)


def _plain(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
