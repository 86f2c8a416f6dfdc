"""CheXpert adapter on a hand-written replica of the real layout (spec datasets.md sections 3 and 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.data.chexpert import ADAPTER
from harness.data.images import decode_image
from harness.data.schema import BASE_COLUMNS, CHEXPERT_14, DataError

HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
          "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
          "Pleural Effusion,Pleural Other,Fracture,Support Devices")
CSV_LABELS = HEADER.split(",")[5:]
GT_HEADER = "Study," + ",".join(CSV_LABELS)


def _labels(**values: str) -> list[str]:
    """14 CSV cells in CSV order; unnamed ones blank."""
    return [values.get(name.replace(" ", "_"), "") for name in CSV_LABELS]


def _row(rel: str, sex: str, age: str, fl: str, appa: str, prefix: str, **labels: str) -> str:
    return ",".join([f"{prefix}{rel}", sex, age, fl, appa, *_labels(**labels)])


TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP",
     dict(Cardiomegaly="1.0", Lung_Opacity="1.0", Edema="-1.0", Atelectasis="-1.0", Pleural_Effusion="1.0",
          Support_Devices="1.0")),
    ("train/patient00002/study2/view1_frontal.jpg", "Male", "87", "Frontal", "PA",
     dict(Cardiomegaly="0.0", Edema="1.0")),
    ("train/patient00002/study2/view2_lateral.jpg", "Male", "87", "Lateral", "",
     dict(Cardiomegaly="0.0", Edema="1.0")),
    ("train/patient00002/study1/view1_frontal.jpg", "Unknown", "0", "Frontal", "AP",
     dict(Pneumonia="-1.0")),
    ("train/patient00003/study1/view1_frontal.jpg", "Female", "90", "Frontal", "LL",
     dict(Fracture="1.0")),
    ("train/patient00004/study1/view1_frontal.jpg", "Male", "45", "Frontal", "PA",
     dict(No_Finding="1.0", Support_Devices="1.0")),
    ("train/patient00005/study1/view1_frontal.jpg", "Female", "33", "Frontal", "AP", {}),  # all blank
    ("train/patient00006/study1/view1_frontal.jpg", "Male", "51", "Frontal", "AP", {}),  # image not on disk
]
def _valid(*positives: str) -> dict[str, str]:
    return {n.replace(" ", "_"): ("1.0" if n in positives else "0.0") for n in CSV_LABELS}


VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP",
     _valid("Cardiomegaly", "Support Devices")),
    ("valid/patient64541/study1/view2_lateral.jpg", "Male", "73", "Lateral", "",
     _valid("Cardiomegaly", "Support Devices")),
    ("valid/patient64542/study1/view1_frontal.jpg", "Female", "70", "Frontal", "PA",
     _valid("No Finding")),
]
MISSING_IMAGE = "train/patient00006/study1/view1_frontal.jpg"


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 32), dtype=np.uint8), "L").save(path, quality=90)


def write_chexpert(data_root: Path, *, release: str = "CheXpert-v1.0-small", prefix: str | None = None,
                   test: bool = False) -> Path:
    """The -small (or original) layout under ``data_root/chexpert``; returns the release folder."""
    folder = data_root / "chexpert" / release if release else data_root / "chexpert"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{release}/" if prefix is None else prefix
    for name, rows in (("train.csv", TRAIN), ("valid.csv", VALID)):
        lines = [HEADER] + [_row(r[0], *r[1:5], prefix, **r[5]) for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        for i, r in enumerate(rows):
            if r[0] != MISSING_IMAGE:
                _jpeg(folder / r[0], i)
    if test:
        gt = [GT_HEADER,
              "CheXpert-v1.0/test/patient64741/study1,0,1,1,1,0,0,0,0,0,0,0,0,0,1",
              "CheXpert-v1.0/test/patient64742/study1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
              "CheXpert-v1.0/test/patient64743/study1,0,0,0,0,0,1,0,0,0,0,1,0,0,0"]  # no images
        (folder / "groundtruth.csv").write_text("\n".join(gt) + "\n", encoding="utf-8")
        for k, rel in enumerate(["patient64741/study1/view1_frontal.jpg",
                                 "patient64741/study1/view2_lateral.jpg",
                                 "patient64742/study1/view1_frontal.jpg",
                                 "patient64744/study1/view1_frontal.jpg"]):  # no groundtruth row
            _jpeg(folder / "test" / rel, 100 + k)
    return folder


def _row_of(records, image_id):
    frame = records.frame
    return frame.loc[frame["image_id"] == image_id].iloc[0]


def test_load_small_release(tmp_path):
    folder = write_chexpert(tmp_path)
    records = DATASETS.get("chexpert").load(tmp_path)
    frame = records.frame
    assert list(frame.columns) == [*BASE_COLUMNS, *CHEXPERT_14]
    assert records.label_names == CHEXPERT_14 and records.dataset == "chexpert"
    assert records.data_source == "real"
    assert len(frame) == len(TRAIN) - 1 + len(VALID)
    assert records.skipped == {"image file missing": 1}
    assert MISSING_IMAGE not in set(frame["image_id"])
    assert set(frame["institution"]) == {"Stanford"} and set(frame["dataset"]) == {"chexpert"}
    assert frame["split"].value_counts().to_dict() == {"train": 7, "val": 3}
    for p in frame["path"]:
        assert Path(p).is_absolute() and Path(p).is_file()

    r = _row_of(records, "train/patient00001/study1/view1_frontal.jpg")
    assert r["path"] == str(folder / "train/patient00001/study1/view1_frontal.jpg")
    assert (r["patient_id"], r["study_id"], r["view"], r["sex"], r["age"]) == (
        "patient00001", "patient00001/study1", "AP", "F", 68.0)
    assert r["Cardiomegaly"] == 1.0 and r["Edema"] == -1.0 and r["Atelectasis"] == -1.0
    assert math.isnan(r["No Finding"]) and math.isnan(r["Pneumonia"])

    lateral = _row_of(records, "train/patient00002/study2/view2_lateral.jpg")
    assert lateral["view"] == "LATERAL" and lateral["study_id"] == "patient00002/study2"
    assert lateral["Edema"] == 1.0 and lateral["Cardiomegaly"] == 0.0  # study labels repeated per view
    unknown = _row_of(records, "train/patient00002/study1/view1_frontal.jpg")
    assert unknown["sex"] == "" and math.isnan(unknown["age"])  # Unknown sex, Age 0 = unknown
    old = _row_of(records, "train/patient00003/study1/view1_frontal.jpg")
    assert old["age"] == 90.0 and old["view"] == "LL"  # 90 = "90 or older", LL kept on a Frontal row
    nofinding = _row_of(records, "train/patient00004/study1/view1_frontal.jpg")
    assert nofinding["No Finding"] == 1.0 and nofinding["Support Devices"] == 1.0
    assert math.isnan(nofinding["Edema"])  # no zero-filling: that is a task's label policy
    blank = _row_of(records, "train/patient00005/study1/view1_frontal.jpg")
    assert blank[list(CHEXPERT_14)].isna().all()

    val = frame[frame["split"] == "val"]
    assert set(val[list(CHEXPERT_14)].to_numpy().ravel()) == {0.0, 1.0}
    assert _row_of(records, "valid/patient64541/study1/view2_lateral.jpg")["view"] == "LATERAL"
    assert any("Age 0" in n for n in records.extras["notes"])
    # the pixels are readable as real 8-bit JPEGs
    assert decode_image(r["path"], 16).shape == (16, 16)


def test_original_prefix_and_kaggle_layout(tmp_path):
    # CSV says CheXpert-v1.0/ but the files sit in a renamed folder: the found folder wins
    a = tmp_path / "a"
    folder = write_chexpert(a, release="CheXpert-v1.0", prefix="CheXpert-v1.0/")
    recs = ADAPTER.load(a)
    assert recs.extras["release"] == "CheXpert-v1.0"
    assert _row_of(recs, "valid/patient64542/study1/view1_frontal.jpg")["path"] == str(
        folder / "valid/patient64542/study1/view1_frontal.jpg")
    b = tmp_path / "b"
    write_chexpert(b, release="", prefix="CheXpert-v1.0-small/")  # Kaggle: csv + train/ directly
    recs_b = ADAPTER.load(b)
    assert recs_b.fingerprint() == recs.fingerprint()  # same ids whatever the prefix
    c = tmp_path / "c"
    write_chexpert(c, release="x", prefix="")  # no prefix at all
    (c / "chexpert" / "x").rename(c / "chexpert" / "CheXpert-v1.0-small")
    assert ADAPTER.load(c).fingerprint() == recs.fingerprint()


def test_test_set_groundtruth(tmp_path):
    write_chexpert(tmp_path, test=True)
    records = ADAPTER.load(tmp_path)
    test = records.frame[records.frame["split"] == "test"]
    assert sorted(test["image_id"]) == ["test/patient64741/study1/view1_frontal.jpg",
                                        "test/patient64741/study1/view2_lateral.jpg",
                                        "test/patient64742/study1/view1_frontal.jpg"]
    assert records.skipped == {"image file missing": 1, "test image without groundtruth": 1,
                               "test study without images": 1}
    lat = _row_of(records, "test/patient64741/study1/view2_lateral.jpg")
    assert lat["view"] == "LATERAL" and lat["study_id"] == "patient64741/study1"
    assert (lat["Enlarged Cardiomediastinum"], lat["Cardiomegaly"], lat["Edema"], lat["Support Devices"]) == (
        1.0, 1.0, 0.0, 1.0)
    front = _row_of(records, "test/patient64742/study1/view1_frontal.jpg")
    assert front["view"] == "FRONTAL" and front["No Finding"] == 1.0 and math.isnan(front["age"])


def test_check_files_off_keeps_missing_rows(tmp_path):
    write_chexpert(tmp_path)
    records = ADAPTER.load(tmp_path, check_files=False, data_source="synthetic")
    assert MISSING_IMAGE in set(records.frame["image_id"]) and records.skipped == {}
    assert records.data_source == "synthetic"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace(",1.0,1.0,,-1.0,", ",1.0,2.0,,-1.0,", 1),
     r"train\.csv:2: Lung Opacity: unexpected value '2\.0'"),
    (lambda t: t.replace("Female,68", "female,68"), r"train\.csv:2: Sex: unexpected value 'female'"),
    (lambda t: t.replace("Female,68", "Female,sixty"), r"train\.csv:2: Age: unexpected value 'sixty'"),
    (lambda t: t.replace("Frontal,PA", "frontal,PA", 1), r"train\.csv:3: Frontal/Lateral"),
    (lambda t: t.replace("patient00004/study1/view1_frontal.jpg", "p4/view1.jpg"),
     r"train\.csv:7: Path"),
    (lambda t: t.replace("patient00005/", "patient00004/"), r"train\.csv:8: Path: .*each image once"),
    (lambda t: t.replace(",Pleural Other,", ",Pleural_Other,"),
     r"train\.csv:1: header: missing.*Pleural Other"),
])
def test_bad_csv_is_a_data_error_naming_line_and_field(tmp_path, edit, message):
    folder = write_chexpert(tmp_path)
    csv = folder / "train.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(DataError, match=message):
        ADAPTER.load(tmp_path)
    report = ADAPTER.check(tmp_path)
    assert report.present and not report.ok and "train.csv" in report.problems[0]


def test_check_report(tmp_path):
    absent = ADAPTER.check(tmp_path)
    assert not absent.present and not absent.ok
    write_chexpert(tmp_path, test=True)
    report = ADAPTER.check(tmp_path)
    assert report.ok and report.dataset == "chexpert"
    assert report.splits == {"test": 3, "train": 7, "val": 3}
    assert report.views == {"AP": 4, "FRONTAL": 2, "LATERAL": 3, "LL": 1, "PA": 3}
    assert report.labels["Cardiomegaly"] == 5 and report.labels["No Finding"] == 3
    assert report.skipped["image file missing"] == 1
    text = report.render()
    assert "chexpert: ok" in text and "patient0" not in text  # aggregate only, no identifiers
