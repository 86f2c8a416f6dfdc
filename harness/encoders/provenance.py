"""What a submission says it was pretrained on: ``DATASET:SPLIT`` values, checked.

The leaderboard flags a row whose pretraining data overlaps the task's evaluation data
(``harness.reporting.leaderboard.leakage``: the same dataset as the task's evaluation dataset, with
split ``test``, ``val`` or ``all``, or no split). A typo there (``mimc-cxr:test``,
``mimic-cxr:tset``) would silently miss the flag, so every value given with
``--pretraining-data`` or in a submitted card's ``pretraining_data`` must be one of:

- ``DATASET:SPLIT`` or ``DATASET`` (meaning all of it, the same as ``DATASET:all``), where
  DATASET is a harness dataset (``harness ls datasets``: mimic-cxr, chexpert, nih14, openi,
  mock) or one of ``EXTERNAL_SOURCES``, the common pretraining sources that are not harness
  datasets and so can never overlap a task (imagenet, imagenet-21k, laion, ...);
- SPLIT one of ``SPLITS`` (train, val, test, all);
- ``unknown``, alone: the default of weights files whose provenance is not given.

Other names of the harness datasets (``chestx-ray14``, ``iu-xray``, ...; ``ALIASES``)
are refused with the harness name, because the flag compares names exactly.
"""

from __future__ import annotations

from harness.encoders.errors import SubmissionError

SPLITS = ("train", "val", "test", "all")
UNKNOWN = "unknown"
# Pretraining sources that are not harness datasets: naming them documents the weights, and they never
# overlap a task's evaluation data.
EXTERNAL_SOURCES = {
    "imagenet": "ImageNet-1k (ILSVRC-2012)",
    "imagenet-21k": "ImageNet-21k / ImageNet-22k",
    "laion": "LAION-400M / LAION-2B image-text pairs",
    "coco": "MS-COCO",
    "jft": "JFT-300M / JFT-3B",
    "instagram": "Instagram hashtag images (IG-1B, IG-3.5B)",
    "openai-clip": "CLIP's WebImageText (WIT-400M)",
    "padchest": "PadChest (Bustos et al. 2020)",
    "vindr-cxr": "VinDr-CXR",
    "rsna-pneumonia": "RSNA Pneumonia Detection Challenge (a subset of NIH-14 images!)",
    "siim-acr": "SIIM-ACR Pneumothorax Segmentation",
    "brax": "BRAX (Brazilian labeled chest X-ray dataset)",
    "covidx": "COVIDx CXR",
}
# other names of harness datasets -> the harness name (the leakage flag compares names exactly)
ALIASES = {
    "mimic": "mimic-cxr", "mimic-cxr-jpg": "mimic-cxr", "mimiccxr": "mimic-cxr", "mimic_cxr": "mimic-cxr",
    "chexpert-small": "chexpert", "chexpert-v1.0": "chexpert", "chexpert-v1.0-small": "chexpert",
    "nih": "nih14", "nih-14": "nih14", "nih-cxr14": "nih14", "chestx-ray14": "nih14", "chestxray14": "nih14",
    "chest-xray14": "nih14", "chestx-ray8": "nih14", "nih-chestxray": "nih14",
    "iu-xray": "openi", "iuxray": "openi", "indiana": "openi", "open-i": "openi", "iu-cxr": "openi",
}


def _harness_datasets() -> list[str]:
    from harness.catalog import DATASETS

    return DATASETS.names()


def check_value(value: str, where: str) -> str:
    """``value`` itself when it is valid (see the module docstring).

    Raises:
        SubmissionError: one line naming ``where`` and the value, with "did you mean".
    """
    from harness.registry import did_you_mean

    text = str(value).strip()
    if text == UNKNOWN:
        return text
    dataset, colon, split = text.partition(":")
    known = [*_harness_datasets(), *EXTERNAL_SOURCES]
    if dataset in ALIASES:
        raise SubmissionError(f"{where} {text!r}: {dataset!r} is the harness dataset {ALIASES[dataset]!r}; write "
                              f"{ALIASES[dataset]}:{split or 'SPLIT'} (the leakage flag compares names exactly)")
    if dataset == "{task}":
        raise SubmissionError(f"{where} {text!r}: '{{task}}' is for methods the harness pretrains; name the "
                              "DATASET:SPLIT the submitted weights saw")
    if dataset not in known:  # a harness dataset first: those are the names the leakage flag compares
        hint = (did_you_mean(dataset.lower(), _harness_datasets()) or did_you_mean(dataset.lower(), known)
                or f"; known: {sorted(known)}, or {UNKNOWN!r}")
        raise SubmissionError(f"{where} {text!r}: unknown dataset {dataset!r}{hint}")
    if colon and split not in SPLITS:
        hint = did_you_mean(split.lower(), list(SPLITS)) or f"; choose from {list(SPLITS)}"
        raise SubmissionError(f"{where} {text!r}: unknown split {split!r}{hint}")
    return text


def check_pretraining_data(values: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """Every value checked (``check_value``), in order.

    Raises:
        SubmissionError: the first invalid value.
    """
    return tuple(check_value(v, where) for v in values)
