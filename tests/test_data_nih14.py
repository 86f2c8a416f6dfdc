"""NIH ChestX-ray14 adapter on a hand-written replica of the real layout (spec datasets.md 4 and 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.data.images import decode_image
from harness.data.nih14 import ADAPTER, LABELS
from harness.data.schema import BASE_COLUMNS, NIH_14, DataError

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
V2020 = [
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.14300000000000002,0.14300000000000002",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.14300000000000002,0.14300000000000002",
    "00000001_002.png,Cardiomegaly|Effusion,2,1,58,M,PA,2500,2048,0.168,0.168",
    "00000002_000.png,No Finding,0,2,80,M,PA,2500,2048,0.171,0.171",
    "00000003_000.png,Hernia|Infiltration|Pleural_Thickening,0,3,74,F,AP,2500,2048,0.168,0.168",
    "00000004_000.png,Mass|Nodule,0,4,82,M,AP,2048,2500,0.168,0.168",
    "00000005_000.png,Effusion|Atelectasis,3,5,69,F,PA,2048,2500,0.168,0.168",  # not alphabetical
    "00000006_000.png,No Finding,0,6,95,F,AP,2500,2048,0.168,0.168",  # PNG never extracted
]
TRAIN_VAL = ["00000001_000.png", "00000001_001.png", "00000001_002.png", "00000002_000.png",
             "00000005_000.png", "00000006_000.png"]
TEST = ["00000003_000.png", "00000004_000.png"]
BBOX = ["Image Index,Finding Label,Bbox [x,y,w,h],,,",
        "00000003_000.png,Infiltrate,8.0,4.0,16.0,12.0",
        "00000003_000.png,Hernia,40.5,30.25,30.0,20.0",  # runs past the right/bottom border
        "00000004_000.png,Mass,0.0,0.0,64.0,48.0",
        "00000099_000.png,Nodule,1.0,1.0,2.0,2.0"]  # image not in the label file
W, H = 64, 48  # fixture PNG size (the real ones are 1024x1024)


def _png(path: Path, kind: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)
    if kind == "rgba":  # a few real NIH PNGs carry extra channels
        Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(path)
    elif kind == "16bit":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(grey, "L").save(path)


def write_nih(data_root: Path, *, variant: str = "v2020", batches: bool = False) -> Path:
    """``data_root/nih14`` in the Box layout (flat images/) or the Kaggle one (images_NNN/images/)."""
    folder = data_root / "nih14"
    folder.mkdir(parents=True, exist_ok=True)
    if variant == "v2020":
        (folder / "Data_Entry_2017_v2020.csv").write_text("\n".join([HEADER, *V2020]) + "\n")
    else:  # original 2017 copy: trailing header comma, 0.143 spacing, one impossible age
        rows = [r.replace("0.14300000000000002", "0.143") for r in V2020]
        rows[3] = rows[3].replace(",2,80,M,", ",2,412,M,")
        (folder / "Data_Entry_2017.csv").write_text("\n".join([HEADER + ",", *rows]) + "\n")
    (folder / "train_val_list.txt").write_text("\n".join(TRAIN_VAL) + "\n")
    (folder / "test_list.txt").write_text("\n".join(TEST) + "\n")
    (folder / "BBox_List_2017.csv").write_text("\n".join(BBOX) + "\n")
    kinds = {"00000003_000.png": "rgba", "00000004_000.png": "16bit"}
    for i, row in enumerate(V2020[:-1]):
        name = row.split(",")[0]
        sub = f"images_{1 + i // 4:03d}/images" if batches else "images"
        _png(folder / sub / name, kinds.get(name, "L"), i)
    return folder


def _row(records, image_id):
    return records.frame.set_index("image_id").loc[image_id]


def test_load_v2020_flat(tmp_path):
    folder = write_nih(tmp_path)
    records = DATASETS.get("nih14").load(tmp_path)
    frame = records.frame
    assert list(frame.columns) == [*BASE_COLUMNS, *LABELS]
    assert records.label_names == (*NIH_14, "No Finding")
    assert len(frame) == 7 and records.skipped == {"image file missing": 1, "box of an image not loaded": 1}
    assert set(frame["institution"]) == {"NIH-CC"}
    assert set(frame[list(LABELS)].to_numpy().ravel()) == {0.0, 1.0}  # no uncertain, no NaN in NIH
    for p in frame["path"]:
        assert Path(p).is_absolute() and Path(p).parent == folder / "images"

    r = _row(records, "00000001_001.png")
    assert (r["patient_id"], r["study_id"], r["view"], r["sex"], r["age"], r["split"]) == (
        "1", "00000001_001.png", "PA", "M", 58.0, "train")
    assert r["Cardiomegaly"] == 1.0 and r["Emphysema"] == 1.0 and r["Effusion"] == 0.0
    assert r["No Finding"] == 0.0
    r3 = _row(records, "00000003_000.png")
    assert r3["split"] == "test" and r3["view"] == "AP" and r3["sex"] == "F"
    assert (r3["Hernia"], r3["Infiltration"], r3["Pleural_Thickening"], r3["Mass"]) == (1.0, 1.0, 1.0, 0.0)
    assert _row(records, "00000002_000.png")["No Finding"] == 1.0
    r5 = _row(records, "00000005_000.png")
    assert r5["Effusion"] == 1.0 and r5["Atelectasis"] == 1.0
    assert frame.groupby("split").size().to_dict() == {"test": 2, "train": 5}
    # RGBA and 16-bit PNGs decode to one grey channel
    assert decode_image(r3["path"], 8).shape == (8, 8)
    assert decode_image(_row(records, "00000004_000.png")["path"], 8).dtype == np.uint8


def test_boxes_in_pixels_and_normalised(tmp_path):
    records = ADAPTER.load(write_nih(tmp_path).parent)
    boxes = records.extras["boxes"]
    assert list(boxes.columns) == ["image_id", "label", "x", "y", "w", "h", "width", "height",
                                   "x0", "y0", "x1", "y1"]
    assert len(boxes) == 3 and "00000099_000.png" not in set(boxes["image_id"])
    infil = boxes.iloc[0]
    assert infil["label"] == "Infiltration"  # renamed from the bbox file's "Infiltrate"
    assert (infil["width"], infil["height"]) == (W, H)
    assert np.allclose(infil[["x0", "y0", "x1", "y1"]].astype(float), [8 / W, 4 / H, 24 / W, 16 / H])
    hernia = boxes.iloc[1]
    assert hernia["x1"] == 1.0 and hernia["y1"] == 1.0  # clipped at the border
    assert math.isclose(hernia["x0"], 40.5 / W) and hernia["x"] == 40.5
    whole = boxes.iloc[2]
    assert whole[["x0", "y0", "x1", "y1"]].tolist() == [0.0, 0.0, 1.0, 1.0]  # 16-bit PNG header read too
    assert any("clipped" in n for n in records.extras["notes"])


def test_load_2017_variant_in_batch_folders(tmp_path):
    folder = write_nih(tmp_path, variant="2017", batches=True)
    records = ADAPTER.load(tmp_path)
    assert records.extras["label_file"] == "Data_Entry_2017.csv"
    assert "Unnamed: 11" not in records.frame.columns
    assert records.skipped["impossible age"] == 1
    r = _row(records, "00000002_000.png")  # row kept, age unknown
    assert math.isnan(r["age"]) and r["No Finding"] == 1.0
    assert _row(records, "00000005_000.png")["path"] == str(folder / "images_002/images/00000005_000.png")
    flat = ADAPTER.load(write_nih(tmp_path / "flat").parent)
    assert (records.frame["image_id"].tolist() == flat.frame["image_id"].tolist())


def test_check_files_off_and_no_split_lists(tmp_path):
    folder = write_nih(tmp_path)
    (folder / "test_list.txt").unlink()
    records = ADAPTER.load(tmp_path, check_files=False)
    assert len(records.frame) == 8 and "image file missing" not in records.skipped
    assert _row(records, "00000006_000.png")["path"] == str(folder / "images" / "00000006_000.png")
    assert _row(records, "00000003_000.png")["split"] == ""
    assert any("test_list.txt not found" in n for n in records.extras["notes"])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("Hernia|Infiltration", "Hernia|Infiltrate"),
     r":6: Finding Labels: unknown label 'Infiltrate'"),
    (lambda t: t.replace(",0,4,82,M,", ",0,4,82Q,M,"), r":7: Patient Age: unexpected value '82Q'"),
    (lambda t: t.replace(",0,4,82,M,", ",0,4,82,Male,"), r":7: Patient Gender"),
    (lambda t: t.replace(",0,2,80,M,", ",0,two,80,M,"), r":5: Patient ID"),
    (lambda t: t.replace("2048,0.171,0.171", "2048,0.171"), r":5: row: 10 fields"),
    (lambda t: t.replace("Cardiomegaly|Emphysema,1", "Cardiomegaly|Emphysema,1,x"), r":3: row: 12 fields"),
    (lambda t: t.replace("Height],", "Height,"), r":1: header"),
    (lambda t: t.replace("00000001_002.png", "00000001_001.png"),
     r":4: Image Index: '00000001_001.png' listed twice"),
])
def test_bad_label_file_is_a_data_error(tmp_path, edit, message):
    folder = write_nih(tmp_path)
    csv = folder / "Data_Entry_2017_v2020.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv" + message):
        ADAPTER.load(tmp_path)
    assert not ADAPTER.check(tmp_path).ok


def test_bad_split_and_box_files(tmp_path):
    folder = write_nih(tmp_path)
    (folder / "test_list.txt").write_text("00000003_000.png\n00000001_000.png\n")
    with pytest.raises(DataError, match="00000001_000.png is also in train_val_list.txt"):
        ADAPTER.load(tmp_path)
    folder = write_nih(tmp_path / "b")
    box = folder / "BBox_List_2017.csv"
    box.write_text(box.read_text().replace("Mass,0.0,0.0,64.0", "Mass,0.0,0.0,-4.0"))
    with pytest.raises(DataError, match=r"BBox_List_2017\.csv:4: Bbox \[x,y,w,h\]"):
        ADAPTER.load(tmp_path / "b")
    box.write_text(box.read_text().replace(",Mass,", ",Lump,"))
    with pytest.raises(DataError, match=r"BBox_List_2017\.csv:4: Finding Label: unknown label 'Lump'"):
        ADAPTER.load(tmp_path / "b")


def test_check_report(tmp_path):
    assert not ADAPTER.check(tmp_path).present
    write_nih(tmp_path, variant="2017")
    report = ADAPTER.check(tmp_path)
    assert report.ok and report.splits == {"test": 2, "train": 5}
    assert report.views == {"AP": 2, "PA": 5} and report.labels["Cardiomegaly"] == 3
    assert report.skipped["impossible age"] == 1
    assert "3 bounding boxes" in report.render()
