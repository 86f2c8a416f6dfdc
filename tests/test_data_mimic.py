"""MIMIC-CXR adapter on hand-written fixtures in the exact real layout (datasets.md sections 1, 2, 6).

The fixture: 4 subjects in 4 ``pNN`` buckets, 6 studies, 10 images (PA + LATERAL,
AP only, a NaN ViewPosition, an LL), a StudyTime below 100000, all three split
values, a study with no label row and one with an all-blank row, -1.0 values,
reports with only FINDINGS / a WET READ / neither section / none at all, one
JPG missing, MIMIC-IV with a subject absent and one ``anchor_age`` 91.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.data.mimic_cxr import ADAPTER
from harness.data.schema import BASE_COLUMNS, CHEXPERT_14, DataError

META_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
               "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
               "PatientOrientationCodeSequence_CodeMeaning")
SPLIT_HEADER = "dicom_id,study_id,subject_id,split"
LABEL_HEADER = "subject_id,study_id," + ",".join(CHEXPERT_14)
RADIOLOGIST_HEADER = ("study_id,Airspace Opacity,Atelectasis,Cardiomegaly,Consolidation,Edema,"
                      "Enlarged Cardiomediastinum,Fracture,Lung Lesion,No Findings,Pleural Effusion,"
                      "Pleural Other,Pneumonia,Pneumothorax,Support Devices")
PATIENTS_HEADER = "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
ADMISSIONS_HEADER = ("subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
                     "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
                     "edouttime,hospital_expire_flag")


def dicom(n: int) -> str:
    h = hashlib.sha1(str(n).encode()).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


# (dicom n, subject, study, view, StudyDate, StudyTime, orientation, split)
IMAGES = [
    (1, 10000032, 50414267, "PA", "21800506", "213014.531", "Erect", "train"),
    (2, 10000032, 50414267, "LATERAL", "21800506", "213014.531", "Erect", "train"),
    (3, 10000032, 53189527, "AP", "21800626", "80556.875", "Recumbent", "train"),
    (4, 11000011, 56699142, "PA", "21500301", "120000.0", "Erect", "validate"),
    (5, 11000011, 56699142, "LATERAL", "21500301", "120000.0", "Erect", "validate"),
    (6, 11000011, 56699142, "", "21500301", "120000.0", "", "validate"),
    (7, 12000022, 57375967, "AP", "21650710", "100000.0", "Recumbent", "test"),
    (8, 12000022, 57375967, "LL", "21650710", "100000.0", "Recumbent", "test"),
    (9, 19000044, 58000001, "PA", "21700101", "90000.0", "Erect", "test"),
    (10, 19000044, 58000002, "PA", "21700102", "90000.0", "Erect", "test"),  # its JPG is never written
]
MISSING_JPG = 10


def label_row(subject: int, study: int, **values: str) -> list[str]:
    return [str(subject), str(study)] + [values.get(n.replace(" ", "_"), "") for n in CHEXPERT_14]


def report(*lines: str) -> str:
    return "                                 FINAL REPORT\n" + "".join(f" {line}\n" for line in lines)


REPORTS = {
    50414267: report("EXAMINATION:  CHEST (PA AND LAT)", "", "INDICATION:  ___ year old man with cough", "",
                     "FINDINGS: ", "", "Lungs are clear.", "", "IMPRESSION: ", "", "No acute process."),
    53189527: report("INDICATION:  dyspnea.", "", "FINDINGS: ", "", "Mild cardiomegaly."),
    56699142: (" WET READ: ___ ___ 9:48 PM\n  Possible effusion.\n " + "_" * 78 + "\n"
               + report("HISTORY:  fever.", "", "IMPRESSION: ", "", "No effusion.")),
    57375967: report("INDICATION:  Shortness of breath.", "", "COMPARISON:  None.", "",
                     "PA and lateral views of the chest.", "", "Right effusion."),
    58000002: report("IMPRESSION: ", "", "Edema."),
    # 58000001: no report file
}


def tables() -> dict[str, tuple[str, list[list[str]]]]:
    """Every CSV of the layout as (exact header, rows); tests edit rows before writing."""
    meta = [[dicom(n), str(s), str(st), "CHEST (PA AND LAT)", v, "3056", "2544", d, t, "CHEST (PA AND LAT)",
             "postero-anterior" if v == "PA" else "", o] for n, s, st, v, d, t, o, _ in IMAGES]
    split = [[dicom(n), str(st), str(s), sp] for n, s, st, *_, sp in IMAGES]
    labels = [
        label_row(10000032, 50414267, Atelectasis="1.0", Cardiomegaly="-1.0", Edema="0.0"),
        label_row(10000032, 53189527),  # all blank
        # 56699142: no label row
        label_row(12000022, 57375967, Pleural_Effusion="1.0", Lung_Opacity="0.0"),
        label_row(19000044, 58000001, No_Finding="1.0"),
        label_row(19000044, 58000002, Edema="1.0"),
    ]
    radiologist = [["57375967", "1.0", "", "", "", "", "", "", "", "", "0.0", "", "", "", ""],
                   ["58000002", "", "", "", "", "-1.0", "", "", "", "", "", "", "", "", ""]]
    patients = [["10000032", "M", "60", "2180", "2014 - 2016", ""],
                ["11000011", "F", "91", "2148", "2008 - 2010", "2151-01-01"],
                ["12000022", "F", "45", "2160", "2011 - 2013", ""]]
    admissions = [["10000032", "20000002", "2180-06-25 10:00:00", "2180-06-30 12:00:00", "", "EW EMER.",
                   "P49AFC", "EMERGENCY ROOM", "HOME", "Medicare", "ENGLISH", "SINGLE", "WHITE", "", "", "0"]]
    return {"metadata": (META_HEADER, meta), "split": (SPLIT_HEADER, split),
            "chexpert": (LABEL_HEADER, labels), "radiologist": (RADIOLOGIST_HEADER, radiologist),
            "patients": (PATIENTS_HEADER, patients), "admissions": (ADMISSIONS_HEADER, admissions)}


def write_csv(path: Path, header: str, rows: list[list[str]], *, gz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wt", newline="") if gz else path.open("w", newline="")) as f:
        f.write(header + "\n")
        csv.writer(f, lineterminator="\n").writerows(rows)


def write_layout(root: Path, t: dict | None = None, *, jpg_version: str | None = None,
                 reports: str = "mimic-cxr", mimiciv: str | None = "3.1") -> Path:
    """The data root: mimic-cxr-jpg/[version/], reports where asked, mimiciv/<version>/hosp."""
    t = t or tables()
    jpg = root / "mimic-cxr-jpg" / jpg_version if jpg_version else root / "mimic-cxr-jpg"
    for key, name in (("metadata", "metadata"), ("split", "split"), ("chexpert", "chexpert")):
        write_csv(jpg / f"mimic-cxr-2.0.0-{name}.csv.gz", *t[key])
    write_csv(jpg / "mimic-cxr-2.1.0-test-set-labeled.csv", *t["radiologist"], gz=False)
    for n, s, st, *_ in IMAGES:
        if n != MISSING_JPG:
            folder = jpg / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{st}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 32), 100 + n, np.uint8), mode="L").save(folder / f"{dicom(n)}.jpg")
    report_base = {"mimic-cxr": root / "mimic-cxr" / "files", "next-to-jpg": jpg / "files",
                   "reports-zip": root / "mimic-cxr" / "mimic-cxr-reports" / "files", "none": None}[reports]
    if report_base is not None:
        subjects = {st: s for _, s, st, *_ in IMAGES}
        for study, text in REPORTS.items():
            path = report_base / f"p{str(subjects[study])[:2]}" / f"p{subjects[study]}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("ascii"))
    if mimiciv is not None:
        write_csv(root / "mimiciv" / mimiciv / "hosp" / "patients.csv.gz", *t["patients"])
        write_csv(root / "mimiciv" / mimiciv / "hosp" / "admissions.csv.gz", *t["admissions"])
    return root


def by_image(records) -> pd.DataFrame:
    return records.frame.set_index("image_id")


def test_load_rows_splits_views_and_paths(tmp_path):
    records = ADAPTER.load(write_layout(tmp_path), data_source="synthetic")
    frame = by_image(records)
    assert records.dataset == "mimic-cxr" and records.data_source == "synthetic"
    assert records.label_names == CHEXPERT_14
    assert set(BASE_COLUMNS) <= set(records.frame.columns)
    assert len(frame) == 9 and dicom(MISSING_JPG) not in frame.index
    assert records.skipped["image file missing"] == 1
    assert frame["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 3}
    assert frame.loc[dicom(6), "view"] == "" and frame.loc[dicom(8), "view"] == "LL"
    assert frame.loc[dicom(6), "orientation"] == ""
    assert frame.loc[dicom(1), "patient_id"] == "10000032" and frame.loc[dicom(1), "study_id"] == "50414267"
    path = Path(frame.loc[dicom(4), "path"])
    assert path.is_absolute() and path.is_file()
    expected = f"mimic-cxr-jpg/files/p11/p11000011/s56699142/{dicom(4)}.jpg"
    assert path.relative_to(tmp_path.resolve()).as_posix() == expected
    assert (frame["institution"] == "BIDMC").all() and (frame["dataset"] == "mimic-cxr").all()
    records.validate()


def test_study_time_zero_padding(tmp_path):
    frame = by_image(ADAPTER.load(write_layout(tmp_path)))
    assert frame.loc[dicom(3), "study_datetime"] == pd.Timestamp("2180-06-26 08:05:56.875")
    assert frame.loc[dicom(1), "study_datetime"] == pd.Timestamp("2180-05-06 21:30:14.531")
    assert frame.loc[dicom(1), "study_date"] == pd.Timestamp("2180-05-06")


def test_labels_are_per_study_and_keep_uncertain(tmp_path):
    records = ADAPTER.load(write_layout(tmp_path))
    frame = by_image(records)
    for d in (dicom(1), dicom(2)):  # both images of the study inherit its labels
        assert frame.loc[d, "Atelectasis"] == 1.0
        assert frame.loc[d, "Cardiomegaly"] == -1.0
        assert frame.loc[d, "Edema"] == 0.0
        assert np.isnan(frame.loc[d, "Pneumonia"])
    assert frame.loc[dicom(3), list(CHEXPERT_14)].isna().all()  # all-blank row
    assert frame.loc[[dicom(4), dicom(5), dicom(6)], list(CHEXPERT_14)].isna().all().all()  # no label row
    assert records.extras["studies_without_label_row"] == 1
    assert frame.loc[dicom(9), "No Finding"] == 1.0


def test_report_sections_and_missing_report(tmp_path):
    records = ADAPTER.load(write_layout(tmp_path))
    frame = by_image(records)
    assert frame.loc[dicom(2), "impression"] == "No acute process."
    assert frame.loc[dicom(2), "findings"] == "Lungs are clear."
    assert frame.loc[dicom(2), "indication"] == "___ year old man with cough"
    assert (frame.loc[dicom(3), "findings"], frame.loc[dicom(3), "impression"]) == ("Mild cardiomegaly.", "")
    assert frame.loc[dicom(6), "impression"] == "No effusion."  # wet read kept out
    assert frame.loc[dicom(6), "indication"] == "fever."
    assert frame.loc[dicom(7), "impression"] == "PA and lateral views of the chest. Right effusion."
    assert frame.loc[dicom(9), ["indication", "findings", "impression"]].tolist() == ["", "", ""]
    assert records.skipped["report missing"] == 1  # images whose study has no report; the row is kept


@pytest.mark.parametrize("where", ["next-to-jpg", "reports-zip"])
def test_versioned_layout_and_report_locations(tmp_path, where):
    root = write_layout(tmp_path, jpg_version="2.1.0", reports=where, mimiciv="2.2")
    write_layout(tmp_path / "other", mimiciv="3.1")  # not under root: must not be used
    (tmp_path / "mimic-cxr-jpg" / "2.0.0").mkdir()  # an older, empty version folder
    records = ADAPTER.load(root)
    assert records.extras["jpg_root"].endswith("mimic-cxr-jpg/2.1.0")
    assert records.extras["mimiciv_version"] == "2.2"
    assert by_image(records).loc[dicom(1), "impression"] == "No acute process."
    assert records.skipped["report missing"] == 1


def test_explicit_reports_root_and_root_as_jpg_folder(tmp_path):
    write_layout(tmp_path / "data", reports="none", mimiciv=None)
    write_layout(tmp_path / "elsewhere", reports="mimic-cxr", mimiciv=None)
    records = ADAPTER.load(tmp_path / "data" / "mimic-cxr-jpg",
                           reports_root=tmp_path / "elsewhere" / "mimic-cxr")
    assert by_image(records).loc[dicom(3), "findings"] == "Mild cardiomegaly."
    assert "ehr_age" not in records.frame.columns and records.frame["sex"].eq("").all()
    no_reports = ADAPTER.load(tmp_path / "data")
    assert no_reports.skipped["report missing"] == 9
    with pytest.raises(DataError, match="reports_root is not a folder"):
        ADAPTER.load(tmp_path / "data", reports_root=tmp_path / "absent")


def test_ehr_join_through_the_adapter(tmp_path):
    records = ADAPTER.load(write_layout(tmp_path))
    frame = by_image(records)
    assert frame.loc[dicom(1), "age"] == 60 and frame.loc[dicom(1), "sex"] == "M"
    assert frame.loc[dicom(4), "age"] == 93 and frame.loc[dicom(4), "ehr_age_over_89"]
    assert np.isnan(frame.loc[dicom(9), "age"]) and frame.loc[dicom(9), "sex"] == ""
    assert not frame.loc[dicom(9), "ehr_available"]
    assert frame.loc[dicom(3), "ehr_hadm_id"] == 20000002
    assert records.extras["ehr_coverage"]["no MIMIC-IV subject (sex/age zero or mean)"] == 1


def test_check_files_false_keeps_rows(tmp_path):
    records = ADAPTER.load(write_layout(tmp_path), check_files=False)
    assert len(records.frame) == 10 and "image file missing" not in records.skipped


def test_radiologist_test_labels(tmp_path):
    root = write_layout(tmp_path)
    records = ADAPTER.load(root, test_labels="radiologist")
    frame = by_image(records)
    assert frame.loc[dicom(7), "Lung Opacity"] == 1.0  # "Airspace Opacity"
    assert frame.loc[dicom(7), "Pleural Effusion"] == 0.0  # labeller said 1.0
    assert np.isnan(frame.loc[dicom(7), "No Finding"])  # "No Findings" column, blank
    assert frame.loc[dicom(9), list(CHEXPERT_14)].isna().all()  # test study absent from the file
    assert frame.loc[dicom(1), "Atelectasis"] == 1.0  # train keeps the labeller
    assert records.extras["test_labels"] == "radiologist"
    assert records.extras["test_studies_with_radiologist_labels"] == 2
    assert records.extras["test_studies_without_radiologist_labels"] == 1
    (root / "mimic-cxr-jpg" / "mimic-cxr-2.1.0-test-set-labeled.csv").unlink()
    with pytest.raises(DataError, match="needs mimic-cxr-2.1.0-test-set-labeled.csv"):
        ADAPTER.load(root, test_labels="radiologist")


def _edit(table: str, row: int, column: str, value: str):
    def edit(t):
        header = t[table][0].split(",")
        t[table][1][row][header.index(column)] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_edit("chexpert", 0, "Edema", "2.0"),
     r"mimic-cxr-2.0.0-chexpert.csv.gz:2: Edema: value '2.0' is not one of 1.0, 0.0, -1.0 or blank"),
    (_edit("chexpert", 3, "Fracture", "yes"),
     r"mimic-cxr-2.0.0-chexpert.csv.gz:5: Fracture: value 'yes' is not a number"),
    (_edit("metadata", 1, "subject_id", "1000003x"),
     r"mimic-cxr-2.0.0-metadata.csv.gz:3: subject_id: value '1000003x' is not an integer identifier"),
    (_edit("split", 2, "split", "valid"), r"split.csv.gz:4: split: value 'valid' is not train"),
    (_edit("split", 4, "study_id", ""), r"mimic-cxr-2.0.0-split.csv.gz:6: study_id: blank is not an integer"),
    (_edit("split", 4, "study_id", "56699143"), r"mimic-cxr-2.0.0-split.csv.gz:6: study_id: disagrees"),
    (_edit("metadata", 1, "dicom_id", dicom(1)), r"mimic-cxr-2.0.0-metadata.csv.gz:3: dicom_id: duplicated"),
    (_edit("metadata", 2, "StudyTime", "256000.0"), r"metadata.csv.gz:4: StudyTime: is not an HHMMSS"),
    (_edit("metadata", 2, "StudyDate", "2180-06-26"), r"metadata.csv.gz:4: StudyDate: value '2180-06-26'"),
    (_edit("patients", 0, "anchor_age", "sixty"), r"patients.csv.gz:2: anchor_age: value 'sixty' is not an"),
])
def test_bad_rows_name_file_row_and_column(tmp_path, edit, message):
    t = tables()
    edit(t)
    root = write_layout(tmp_path, t)
    with pytest.raises(DataError, match=message):
        ADAPTER.load(root)
    report = ADAPTER.check(root)
    assert report.present and not report.ok
    assert any("metadata" in p or "split" in p or "chexpert" in p or "patients" in p for p in report.problems)


def test_missing_column_and_missing_file(tmp_path):
    t = tables()
    t["chexpert"] = (LABEL_HEADER.replace(",Edema", ""), [r[:6] + r[7:] for r in t["chexpert"][1]])
    root = write_layout(tmp_path, t)
    with pytest.raises(DataError, match=r"chexpert.csv.gz:1: header: missing column\(s\) \['Edema'\]"):
        ADAPTER.load(root)
    (root / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match="missing mimic-cxr-2.0.0-split.csv.gz"):
        ADAPTER.load(root)


def test_non_utf8_report_is_an_error_naming_the_file(tmp_path):
    root = write_layout(tmp_path)
    path = root / "mimic-cxr" / "files" / "p10" / "p10000032" / "s53189527.txt"
    path.write_bytes(path.read_bytes()[:50] + b"\xe9" + path.read_bytes()[50:])
    with pytest.raises(DataError, match=r"s53189527.txt: byte 50: encoding: not valid UTF-8"):
        ADAPTER.load(root)


def test_check_report(tmp_path):
    report = ADAPTER.check(write_layout(tmp_path))
    assert report.ok and report.n_images == 9
    assert report.splits == {"test": 3, "train": 3, "val": 3}
    assert report.views == {"PA": 3, "LATERAL": 2, "AP": 2, "": 1, "LL": 1}
    assert report.labels["Atelectasis"] == 2 and report.labels["Pleural Effusion"] == 2
    assert report.skipped == {"image file missing": 1, "report missing": 1}
    text = report.render()
    assert text.startswith("mimic-cxr: ok") and "splits: test=3, train=3, val=3" in text
    assert "10000032" not in text  # aggregate only
    absent = ADAPTER.check(tmp_path / "empty")
    assert not absent.present and "NOT FOUND" in absent.render()


def test_registered_in_the_catalog():
    assert DATASETS.get("mimic-cxr") is ADAPTER


def _write_mimic_sized_tables(jpg: Path) -> tuple[int, int]:
    """377,110 images / 227,835 studies / 65,379 patients, like the real metadata (no images, no reports)."""
    n_images, n_studies, n_patients = 377_110, 227_835, 65_379
    rng = np.random.default_rng(0)
    study_subject = 10_000_000 + np.sort(rng.integers(0, n_patients, n_studies)) * 137
    studies = 50_000_000 + np.arange(n_studies) * 43
    image_study = np.concatenate([np.arange(n_studies), np.arange(n_images - n_studies)])  # 1-2 images each
    dicoms = [f"{i:08x}-{i * 7:08x}-{i * 13:08x}-{i * 17:08x}-{i * 19:08x}" for i in range(n_images)]
    views = rng.choice(np.array(["PA", "AP", "LATERAL", "LL", ""], dtype=object), n_images)
    times = np.round(rng.uniform(0, 235959, n_images) // 100 * 100 + rng.uniform(0, 59, n_images), 3)
    meta = pd.DataFrame({
        "dicom_id": dicoms, "subject_id": study_subject[image_study], "study_id": studies[image_study],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": views, "Rows": 3056,
        "Columns": 2544, "StudyDate": 21000101 + (image_study % 28), "StudyTime": np.where(
            (times % 10000) // 100 < 60, times, 120000.0),
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)", "ViewCodeSequence_CodeMeaning": "",
        "PatientOrientationCodeSequence_CodeMeaning": rng.choice(
            np.array(["Erect", "Recumbent", ""], dtype=object), n_images),
    })
    split = np.where(image_study % 100 == 0, "test", np.where(image_study % 100 == 1, "validate", "train"))
    gzip_opts = {"method": "gzip", "compresslevel": 1}
    meta.to_csv(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", index=False, compression=gzip_opts)
    split_table = pd.DataFrame({"dicom_id": dicoms, "study_id": meta["study_id"],
                                "subject_id": meta["subject_id"], "split": split})
    split_table.to_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression=gzip_opts)
    labelled = np.arange(8, n_studies)  # the first 8 studies have no label row, as in the real file
    values = rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), (len(labelled), 14))
    labels = pd.DataFrame(values, columns=list(CHEXPERT_14))
    labels.insert(0, "study_id", studies[labelled])
    labels.insert(0, "subject_id", study_subject[labelled])
    labels.to_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False, compression=gzip_opts)
    return n_images, int((split == "test").sum())


@pytest.mark.slow
def test_mimic_sized_metadata_loads(tmp_path):
    # 7-14 s on the shared CI box (2-3 s of it the load itself); no timing is asserted.
    jpg = tmp_path / "mimic-cxr-jpg"
    jpg.mkdir()
    n_images, n_test = _write_mimic_sized_tables(jpg)
    start = time.perf_counter()
    records = ADAPTER.load(tmp_path, check_files=False)
    seconds = time.perf_counter() - start
    frame = records.frame
    assert len(frame) == n_images
    assert (frame["split"] == "test").sum() == n_test
    assert records.extras["studies_without_label_row"] == 8
    assert records.skipped == {"report missing": n_images}
    labels = pd.read_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", nrows=5)
    row = frame[frame["study_id"] == str(labels["study_id"][2])].iloc[0]
    np.testing.assert_array_equal(row[list(CHEXPERT_14)].to_numpy(dtype=float),
                                  labels.loc[2, list(CHEXPERT_14)].to_numpy(dtype=float))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"mimic-sized load: {seconds:.1f} s, process peak RSS {peak_gb:.2f} GB")
    assert peak_gb < 2.0
