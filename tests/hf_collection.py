"""Tiny Hugging Face-format CXR collections written for real, in the layouts ``datasets`` writes.

``rows`` makes the columns (an HF ``Image`` struct of PNG bytes, patient, study, view, split, sex,
age, report sections, three CheXpert-style labels 1 / 0 / -1 / null); ``write_parquet`` writes
them as ``data/<split>-00000-of-00001.parquet`` with the features in the schema's ``huggingface``
metadata (what ``Dataset.to_parquet`` and ``push_to_hub`` write), ``write_save_to_disk`` as a
``DatasetDict.save_to_disk`` folder (``dataset_dict.json``, one folder per split with
``state.json``, ``dataset_info.json`` and an Arrow IPC stream ``data-00000-of-00001.arrow``), both
checked against what ``datasets`` 5.2 itself writes. Needs pyarrow.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

LABELS = ("Atelectasis", "Edema", "No Finding")
SPLIT_WORDS = {"train": "train", "val": "validation", "test": "test"}
COLUMN_MAP = {
    "image": "image", "patient_id": "patient", "study_id": "study", "view": "view", "split": None, "sex": "sex",
    "age": "age", "report": {"findings": "findings", "impression": "impression"},
    "labels": {"Atelectasis": "atelectasis", "Edema": "edema", "No Finding": "no_finding"},
}
FEATURES = {"image": {"_type": "Image"}, "patient": {"dtype": "string", "_type": "Value"},
            "study": {"dtype": "string", "_type": "Value"}, "view": {"dtype": "string", "_type": "Value"},
            "sex": {"dtype": "string", "_type": "Value"}, "age": {"dtype": "float64", "_type": "Value"},
            "findings": {"dtype": "string", "_type": "Value"}, "impression": {"dtype": "string", "_type": "Value"},
            "atelectasis": {"dtype": "float64", "_type": "Value"}, "edema": {"dtype": "float64", "_type": "Value"},
            "no_finding": {"dtype": "float64", "_type": "Value"}, "split": {"dtype": "string", "_type": "Value"}}


def png(rng: np.random.Generator, bright: float, size: int = 24) -> bytes:
    """A small grey PNG whose centre is brighter for a positive image (a signal a probe can find)."""
    pixels = rng.integers(0, 80, (size, size)).astype(np.float64)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 150 * bright
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def rows(n_patients: int = 30, per_patient: int = 2, seed: int = 0) -> dict[str, list[Any]]:
    """The collection's columns; patients split 60 / 20 / 20 into train / val / test, by patient."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Any]] = {k: [] for k in FEATURES}
    for p in range(n_patients):
        split = "train" if p % 5 < 3 else ("val" if p % 5 == 3 else "test")
        for s in range(per_patient):
            atelectasis = float(rng.integers(0, 2))
            edema = [1.0, 0.0, -1.0, None][int(rng.integers(0, 4))]
            out["image"].append({"bytes": png(rng, atelectasis), "path": None})
            out["patient"].append(f"pat{p:03d}")
            out["study"].append(f"pat{p:03d}-s{s}")
            out["view"].append(["PA", "AP", "LATERAL"][(p + s) % 3])
            out["split"].append(SPLIT_WORDS[split])
            out["sex"].append("female" if p % 2 else "male")
            out["age"].append(float(20 + p))
            out["findings"].append(f"Findings of study {s}.")
            out["impression"].append("No acute process." if not atelectasis else "Basal atelectasis.")
            out["atelectasis"].append(atelectasis)
            out["edema"].append(edema)
            out["no_finding"].append(1.0 if not atelectasis and edema != 1.0 else None)
    return out


def _table(columns: dict[str, list[Any]], features: dict[str, Any]):
    import pyarrow as pa

    table = pa.table(columns)
    meta = {"huggingface": json.dumps({"info": {"features": {k: features[k] for k in columns if k in features}}})}
    return table.replace_schema_metadata(meta)


def by_split(columns: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """The columns per split word (``train`` / ``validation`` / ``test``), without the split column."""
    out: dict[str, dict[str, list[Any]]] = {}
    for i, word in enumerate(columns["split"]):
        part = out.setdefault(word, {k: [] for k in columns if k != "split"})
        for k in part:
            part[k].append(columns[k][i])
    return out


def write_column_map(folder: Path, mapping: dict[str, Any] | None = None, **changes: Any) -> Path:
    """``harness_columns.yaml`` from ``COLUMN_MAP`` (or ``mapping``), with keys changed (None removes one)."""
    cmap = {**(COLUMN_MAP if mapping is None else mapping), **changes}
    cmap = {k: v for k, v in cmap.items() if v is not None}
    path = folder / "harness_columns.yaml"
    path.write_text(yaml.safe_dump(cmap, sort_keys=False))
    return path


def write_parquet(folder: Path, columns: dict[str, list[Any]] | None = None, *, split_files: bool = True,
                  features: dict[str, Any] | None = None) -> Path:
    """The collection as parquet: one ``data/<split>-00000-of-00001.parquet`` per split (or one file)."""
    import pyarrow.parquet as pq

    columns = rows() if columns is None else columns
    features = features or FEATURES
    (folder / "data").mkdir(parents=True, exist_ok=True)
    if split_files:
        for word, part in by_split(columns).items():
            pq.write_table(_table(part, features), folder / "data" / f"{word}-00000-of-00001.parquet")
    else:
        pq.write_table(_table(columns, features), folder / "data" / "collection.parquet")
    write_column_map(folder)
    return folder


def write_save_to_disk(folder: Path, columns: dict[str, list[Any]] | None = None) -> Path:
    """The collection as ``DatasetDict.save_to_disk`` writes it (splits from ``split``, which is dropped)."""
    import pyarrow as pa

    columns = rows() if columns is None else columns
    parts = by_split(columns)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(parts)}))
    for word, part in parts.items():
        sub = folder / word
        sub.mkdir()
        table = _table(part, FEATURES)
        with pa.OSFile(str(sub / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        (sub / "state.json").write_text(json.dumps({
            "_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": f"tiny-{word}",
            "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
            "_split": None}, indent=2))
        (sub / "dataset_info.json").write_text(json.dumps({
            "citation": "", "description": "", "features": {k: FEATURES[k] for k in part}, "homepage": "",
            "license": ""}, indent=2))
    write_column_map(folder)
    return folder


def data_root(tmp: Path, name: str = "tiny", layout: str = "parquet") -> Path:
    """A data root holding one collection ``hf/<name>`` in ``layout`` (``parquet`` or ``save_to_disk``)."""
    root = tmp / "root"
    folder = root / "hf" / name
    (write_parquet if layout == "parquet" else write_save_to_disk)(folder)
    return root
