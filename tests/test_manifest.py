"""Leakage from a manifest: the ids the weights were trained on, matched (in their usual spellings) to a
task's patients, counted per split, refused on validation or test patients unless ``--allow-overlap``,
and then flagged in the record and on the leaderboard, as counts only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli import main
from harness.dispatch.runner import RunRequest, prepare
from harness.encoders.manifest import _row_keys, overlap, read_manifest, variants
from harness.reporting.leaderboard import render_all

RUN = ["--tasks", "mock", "--profile", "smoke", "--seeds", "0", "--fractions", "1"]


@pytest.fixture(scope="module")
def mock_data():
    return prepare(RunRequest(method="random", task="mock", profile="smoke", progress=False)).data


def _ids(data, split: str) -> pd.DataFrame:
    return data.split(split).frame[["image_id", "study_id", "patient_id"]].astype(str)


@pytest.mark.parametrize("manifest, row, hit", [
    ("p10000032", ("dicom1", "50414267", "10000032"), True),  # MIMIC subject with its folder's p prefix
    ("s50414267", ("dicom1", "50414267", "10000032"), True),  # MIMIC study with its s prefix
    ("files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg", ("02aa804e-bde0afdd", "50414267", "10000032"), True),
    ("00000001", ("00000001_000.png", "00000001_000.png", "1"), True),  # NIH patient, zero-padded
    ("images_001/images/00000001_000.png", ("00000001_000.png", "00000001_000.png", "1"), True),
    ("CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",  # the full-size copy's path, small copy's row
     ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "patient00001/study1", "patient00001"), True),
    ("view1_frontal.jpg",  # a bare CheXpert file name names no single image
     ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "patient00001/study1", "patient00001"), False),
    ("PATIENT00001", ("x/y/z.jpg", "patient00001/study1", "patient00001"), True),  # case
    ("10000033", ("dicom1", "50414267", "10000032"), False),
])
def test_ids_match_in_their_usual_spellings(manifest, row, hit):
    assert bool(variants(manifest) & _row_keys(*row)) is hit


def test_manifest_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# ids used in pretraining\np001\n\np002 extra text\n")
    assert read_manifest(tmp_path / "a.txt").n_ids == 2
    (tmp_path / "b.csv").write_text("dicom_id,subject_id,label\nabc,10000032,1\ndef,10000033,0\n")
    m = read_manifest(tmp_path / "b.csv")
    assert m.n_ids == 2 and {"abc", "10000032"} <= m.entries[0]
    (tmp_path / "c.tsv").write_text("Image Index\tPatient ID\n00000001_000.png\t1\n")
    assert read_manifest(tmp_path / "c.tsv").entries[0] >= {"00000001_000.png", "00000001_000", "1"}


def test_overlap_counts_patients_per_split(mock_data, tmp_path):
    test, val, train = _ids(mock_data, "test"), _ids(mock_data, "val"), _ids(mock_data, "train")
    path = tmp_path / "m.csv"
    rows = [*test["image_id"][:3], *val["patient_id"][:1], *train["image_id"], "unknown-image.png"]
    pd.DataFrame({"image_id": rows}).to_csv(path, index=False)
    counts = overlap(read_manifest(path), mock_data)
    assert counts["test_patients"] == test["patient_id"][:3].nunique()
    assert counts["val_patients"] == 1 and counts["train_patients"] == train["patient_id"].nunique()
    assert counts["test_patients_total"] == test["patient_id"].nunique()
    assert counts["manifest_ids"] == len(rows) and counts["matched_ids"] == len(rows) - 1
    assert not any(isinstance(v, str) and v in set(test["image_id"]) for v in counts.values())  # counts only


def test_training_split_manifest_scores_and_records_counts(mock_data, tmp_path, capsys):
    train = _ids(mock_data, "train")
    path = tmp_path / "train_ids.txt"
    path.write_text("\n".join(train["patient_id"].unique()) + "\n")
    assert main(["-q", "submit", "examples.my_encoder:build", "--name", "man-train", "--pretraining-manifest",
                 str(path), *RUN, "--results", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    [rec] = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    ov = rec["pretraining_overlap"]
    assert (ov["val_patients"], ov["test_patients"], ov["allowed"]) == (0, 0, False)
    assert ov["train_patients"] == train["patient_id"].nunique() and len(ov["manifest_sha256"]) == 64
    render_all(tmp_path / "r", tmp_path / "lb")
    assert "| man-train |" in (tmp_path / "lb" / "synthetic" / "mock.md").read_text()  # not flagged


def test_allowed_overlap_is_scored_and_flagged(mock_data, tmp_path, capsys):
    test = _ids(mock_data, "test")
    path = tmp_path / "leaky.txt"
    path.write_text("\n".join(test["image_id"][:4]) + "\n")
    assert main(["-q", "submit", "examples.my_encoder:build", "--name", "man-leaky", "--pretraining-manifest",
                 str(path), "--allow-overlap", *RUN, "--results", str(tmp_path / "r")]) == 0
    [rec] = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    seen = test["patient_id"][:4].nunique()
    assert rec["pretraining_overlap"]["test_patients"] == seen and rec["pretraining_overlap"]["allowed"] is True
    assert not any(i in json.dumps(rec) for i in test["image_id"][:4])
    render_all(tmp_path / "r", tmp_path / "lb")
    board = (tmp_path / "lb" / "synthetic" / "mock.md").read_text()
    assert "| man-leaky ⚠ |" in board
    assert (f"its pretraining manifest holds 0 validation and {seen} test patients (scored with --allow-overlap)"
            in board)
