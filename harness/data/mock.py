"""A tiny dataset for unit tests: 96 grey 32x32 PNGs with two learnable labels.

``Square`` is a bright square in the upper left, ``Bar`` a horizontal bar near the
bottom; each present with probability 1/2, noise elsewhere. Written on first
use under ``$HARNESS_CACHE/mock/v2`` and read back like any other dataset, so the
whole flow (cache, cohort, encoder, protocol, record) runs in seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.data.schema import Records

LABELS = ("Square", "Bar")
N_PATIENTS, IMAGES_PER_PATIENT, SIZE, VERSION = 48, 2, 32, 2


def _root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")) / "mock" / f"v{VERSION}"


def _write(root: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".mock-"))
    for p in range(N_PATIENTS):
        for k in range(IMAGES_PER_PATIENT):
            square, bar = rng.random(2) < 0.5
            img = rng.normal(90, 30, (SIZE, SIZE))
            if square:
                img[5:11, 5:11] += 28
            if bar:
                img[24:26, 6:26] += 28
            name = f"p{p:03d}_{k}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(tmp / name)
            rows.append({"image_id": name, "patient_id": f"p{p:03d}", "Square": float(square), "Bar": float(bar)})
    pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
    try:
        os.replace(tmp, root)
    except OSError:  # another process won the race; its copy is identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


class MockAdapter:
    name = "mock"
    needs_data_root = False  # it writes itself into the cache; no data root is resolved for it

    def load(self, root: Path | None = None, *, data_source: str = "synthetic", **_: object) -> Records:
        root = _root()
        if not (root / "labels.csv").exists():
            _write(root)
        df = pd.read_csv(root / "labels.csv", dtype={"image_id": str, "patient_id": str})
        frame = pd.DataFrame({
            "dataset": "mock", "image_id": df["image_id"], "patient_id": df["patient_id"],
            "study_id": df["image_id"], "view": "PA", "split": "", "path": [str(root / n) for n in df["image_id"]],
            "institution": "mock", "indication": "", "findings": "", "impression": "", "age": np.nan, "sex": "",
            "Square": df["Square"], "Bar": df["Bar"],
        })
        return Records(dataset="mock", frame=frame, label_names=LABELS, root=root, data_source="synthetic")

    def check(self, root: Path | None = None):
        from harness.data.check import CheckReport

        recs = self.load(root)
        return CheckReport(dataset="mock", root=recs.root, present=True,
                           counts={"images": {"all": len(recs.frame)}}, problems=[])


ADAPTER = MockAdapter()
