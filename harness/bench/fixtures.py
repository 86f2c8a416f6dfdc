"""The bench's synthetic inputs: planted-texture images, image files, MIMIC-sized tables, an encoder.

Every figure measures the harness on these, so the bench needs no dataset and the same
inputs come back for a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def planted_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size)`` uint8 images and ``(n, 4)`` float32 labels of four planted textures.

    A bright blob, horizontal stripes, a dark quadrant and speckle, each present with
    probability 0.3 at a random strength, over noise: learnable by a linear probe on
    random-CNN features, but not perfectly (AUROCs well below 1), so probe quality shows.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = (rng.random((n, 4)) < 0.3).astype(np.float32)
    strength = rng.uniform(0.2, 1.0, (n, 4)) * labels
    x = rng.normal(110.0, 30.0, (n, size, size)) + 40 * yy
    cy, cx = rng.uniform(0.25, 0.75, (2, n))
    blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 0.02)
    x += 70 * strength[:, 0, None, None] * blob
    x += 25 * strength[:, 1, None, None] * np.sin(2 * np.pi * yy * size / 4)[None]
    quadrant = (yy < 0.5)[None] & (xx < 0.5)[None]
    x -= 45 * strength[:, 2, None, None] * quadrant
    x += 120 * strength[:, 3, None, None] * (rng.random((n, size, size)) < 0.04)
    return np.clip(x, 0, 255).astype(np.uint8), labels


def write_image_files(folder: Path, n: int, px: int) -> list[str]:
    """``n`` grey files of ``px`` x ``px``: the first half JPEG (quality 95, like MIMIC-CXR-JPG), the rest PNG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images, _ = planted_images(n, 64, seed=3)
    paths = []
    for i, small in enumerate(images):
        big = Image.fromarray(small).resize((px, px), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(big, np.int16) + np.random.default_rng(i).integers(-6, 7, (px, px)), 0, 255)
        path = folder / (f"{i:05d}.jpg" if i < n // 2 else f"{i:05d}.png")
        Image.fromarray(noisy.astype(np.uint8)).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
        paths.append(str(path))
    return paths


MIMIC_SIZE = {"images": 377_110, "studies": 227_835, "patients": 65_379}


def write_mimic_tables(root: Path, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """The three MIMIC-CXR-JPG 2.0.0 tables the adapter needs, at ``scale`` x MIMIC's size, under ``root``.

    ``root/mimic-cxr-jpg/mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`` with MIMIC's columns
    and value formats (dicom ids, 8-digit subject/study ids, YYYYMMDD dates, HHMMSS.fff times,
    1 / 0 / -1 / blank labels). No images, reports or MIMIC-IV.
    """
    import pandas as pd

    from harness.data.schema import CHEXPERT_14

    rng = np.random.default_rng(seed)
    n_img, n_study, n_pat = (max(3, round(v * scale)) for v in MIMIC_SIZE.values())
    study_patient = np.sort(np.concatenate([np.arange(n_pat), rng.integers(0, n_pat, n_study - n_pat)]))
    image_study = np.sort(np.concatenate([np.arange(n_study), rng.integers(0, n_study, n_img - n_study)]))
    subject = 10_000_000 + study_patient * 137
    study = 50_000_000 + rng.permutation(n_study) * 43
    hexes = rng.integers(0, 2**32, (n_img, 5), dtype=np.uint64)
    dicom = ["-".join(f"{v:08x}" for v in row) for row in hexes.tolist()]
    dates = pd.Timestamp("2110-01-01") + pd.to_timedelta(rng.integers(0, 3650, n_study), unit="D")
    times = rng.integers(0, 24, n_img) * 10000 + rng.integers(0, 60, n_img) * 100 + rng.uniform(0, 59.9, n_img)
    meta = pd.DataFrame({
        "dicom_id": dicom, "subject_id": subject[image_study], "study_id": study[image_study],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": rng.choice(["PA", "AP", "LATERAL", "LL", ""], n_img, p=[0.25, 0.4, 0.25, 0.05, 0.05]),
        "Rows": 3056, "Columns": 2544, "StudyDate": dates.strftime("%Y%m%d")[image_study],
        "StudyTime": np.round(times, 3),
        "PatientOrientationCodeSequence_CodeMeaning": rng.choice(["Erect", "Recumbent", ""], n_img)})
    split_of_patient = rng.choice(["train", "validate", "test"], n_pat, p=[0.978, 0.008, 0.014])
    split = pd.DataFrame({"dicom_id": dicom, "study_id": meta["study_id"], "subject_id": meta["subject_id"],
                          "split": split_of_patient[study_patient[image_study]]})
    values = rng.choice([1.0, 0.0, -1.0, np.nan], (n_study, len(CHEXPERT_14)), p=[0.15, 0.1, 0.05, 0.7])
    labels = pd.DataFrame({"subject_id": subject, "study_id": study,
                           **{name: values[:, j] for j, name in enumerate(CHEXPERT_14)}})
    jpg = root / "mimic-cxr-jpg"
    jpg.mkdir(parents=True, exist_ok=True)
    gz = {"method": "gzip", "compresslevel": 1}
    for name, table in (("metadata", meta), ("split", split), ("chexpert", labels)):
        table.to_csv(jpg / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False, compression=gz)
    return {"images": n_img, "studies": n_study, "patients": n_pat}


def random_encoder(method_profile: str, **overrides: Any) -> Any:
    """The ``random`` method's encoder (untrained; speed does not depend on the weights).

    Args:
        method_profile: the method profile whose backbone and image size it gets (``smoke``, ``small``).
        overrides: config keys to replace, e.g. ``image_size=48``.
    """
    from harness.dispatch.runner import load_method

    method = load_method("random")
    return method.load(None, {**method.profiles[method_profile], **overrides})
