"""MIMIC-IV join and the MSN+EHR encodings, against hand-computed values.

Fixture: three subjects in ``mimiciv/3.1/{hosp,icu}`` written with the exact
headers; a fourth subject has no MIMIC-IV row at all. Times are shifted 21xx
dates like the real tables.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.data.ehr import ehr_coverage, encode_ehr, find_mimiciv, join_ehr
from harness.data.schema import DataError

PATIENTS_HEADER = "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
ADMISSIONS_HEADER = ("subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
                     "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
                     "edouttime,hospital_expire_flag")
ADMISSIONS_V1_HEADER = ("subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,"
                        "discharge_location,insurance,language,marital_status,ethnicity,edregtime,edouttime,"
                        "hospital_expire_flag")
ICUSTAYS_HEADER = "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los"

PATIENTS = [
    ["10000032", "M", "60", "2180", "2014 - 2016", ""],
    ["11000011", "F", "91", "2148", "2008 - 2010", "2151-01-01"],
    ["12000022", "F", "45", "2160", "2011 - 2013", ""],
    ["13000033", "M", "30", "2170", "2017 - 2019", ""],
]


def _admission(subject, hadm, admit, disch, kind, edreg, flag):
    death = disch if flag == "1" else ""
    return [subject, hadm, admit, disch, death, kind, "P49AFC", "EMERGENCY ROOM", "HOME", "Medicare",
            "ENGLISH", "SINGLE", "WHITE", edreg, "", flag]


ADMISSIONS = [
    # admitted 22:23, the CXR was taken at 21:30 in the ED (registered 19:00)
    _admission("10000032", "20000001", "2180-05-06 22:23:00", "2180-05-08 14:00:00", "URGENT",
               "2180-05-06 19:00:00", "0"),
    _admission("10000032", "20000002", "2180-06-25 10:00:00", "2180-06-30 12:00:00", "EW EMER.", "", "1"),
    # discharged (and died) at 09:00, the study is at 10:00 the same day: only the DATE rule matches
    _admission("12000022", "20000003", "2165-07-09 08:00:00", "2165-07-10 09:00:00", "OBSERVATION ADMIT", "",
               "1"),
    _admission("12000022", "20000004", "2159-12-31 08:00:00", "2160-01-02 09:00:00", "ELECTIVE", "", "0"),
]
ICUSTAYS = [
    ["10000032", "20000002", "30000001", "MICU", "MICU", "2180-06-26 06:00:00", "2180-06-27 06:00:00", "1.0"],
    ["12000022", "20000003", "30000002", "CCU", "CCU", "2165-07-09 09:00:00", "2165-07-10 08:00:00", "0.96"],
]


def write_csv_gz(path: Path, header: str, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as f:
        f.write(header + "\n")
        csv.writer(f, lineterminator="\n").writerows(rows)


def write_mimiciv(folder: Path, *, icu: bool = True, admissions: list[list[str]] | None = None) -> Path:
    write_csv_gz(folder / "hosp" / "patients.csv.gz", PATIENTS_HEADER, PATIENTS)
    write_csv_gz(folder / "hosp" / "admissions.csv.gz", ADMISSIONS_HEADER, admissions or ADMISSIONS)
    if icu:
        write_csv_gz(folder / "icu" / "icustays.csv.gz", ICUSTAYS_HEADER, ICUSTAYS)
    return folder


def study_frame() -> pd.DataFrame:
    """Six images: r4's subject has no MIMIC-IV row; r5 has no StudyTime and a rare view."""
    dt = pd.to_datetime(["2180-05-06 21:30:14", "2180-06-26 08:05:56.875", "2150-03-01 12:00:00",
                         "2165-07-10 10:00:00", "2170-01-01 09:00:00", None], format="ISO8601")
    dates = pd.to_datetime(["2180-05-06", "2180-06-26", "2150-03-01", "2165-07-10", "2170-01-01",
                            "2160-01-01"])
    return pd.DataFrame({
        "patient_id": ["10000032", "10000032", "11000011", "12000022", "19000044", "12000022"],
        "study_date": dates, "study_datetime": dt,
        "view": ["PA", "AP", "LATERAL", "", "LL", "SWIMMERS"],
        "orientation": ["Erect", "Recumbent", "", "Erect", "Erect", ""],
    })


@pytest.fixture
def joined(tmp_path) -> pd.DataFrame:
    write_mimiciv(tmp_path / "mimiciv" / "3.1")
    return join_ehr(study_frame(), tmp_path / "mimiciv")


def test_join_demographics(joined):
    assert joined["ehr_available"].tolist() == [True, True, True, True, False, True]
    assert joined["ehr_sex"].tolist() == ["M", "M", "F", "F", "", "F"]
    np.testing.assert_array_equal(joined["ehr_age"], [60, 60, 93, 50, np.nan, 45])
    assert joined["ehr_age_over_89"].tolist() == [False, False, True, False, False, False]


def test_join_admission_by_timestamp(joined):
    assert joined["ehr_hadm_id"].tolist()[:2] == [pd.NA, 20000002]
    assert joined["ehr_hadm_id"].isna().tolist() == [True, False, True, True, True, True]
    assert joined["ehr_admission_type"].tolist() == ["", "EW EMER.", "", "", "", ""]
    nan = np.nan
    np.testing.assert_array_equal(joined["ehr_hospital_expire_flag"], [nan, 1, nan, nan, nan, nan])
    np.testing.assert_array_equal(joined["ehr_in_icu"], [0, 1, 0, 0, 0, 0])


def test_join_paper_date_rules(joined):
    # mortality: date-level window, 0 where none; ICU likewise
    np.testing.assert_array_equal(joined["ehr_stay_expire"], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(joined["ehr_icu_stay"], [0, 1, 0, 1, 0, 0])


def test_edregtime_widens_the_window(tmp_path):
    write_mimiciv(tmp_path / "mimiciv" / "3.1")
    out = join_ehr(study_frame(), tmp_path / "mimiciv", from_edregtime=True)
    assert out["ehr_hadm_id"].iloc[0] == 20000001
    assert out["ehr_admission_type"].iloc[0] == "URGENT"
    assert out["ehr_hospital_expire_flag"].iloc[0] == 0


def test_join_does_not_mutate_and_keeps_rows(joined):
    frame = study_frame()
    assert len(joined) == len(frame)
    assert not any(c.startswith("ehr_") for c in frame.columns)


def test_version_resolution(tmp_path):
    root = tmp_path / "mimiciv"
    v1 = root / "1.0"
    write_csv_gz(v1 / "core" / "patients.csv.gz", PATIENTS_HEADER, PATIENTS)
    write_csv_gz(v1 / "core" / "admissions.csv.gz", ADMISSIONS_V1_HEADER,
                 [r[:6] + r[7:12] + ["WHITE"] + r[13:] for r in ADMISSIONS])
    assert find_mimiciv(root).version == "1.0"
    v1_joined = join_ehr(study_frame(), root)  # v1.0: core/, ethnicity, no admit_provider_id, no icu
    assert v1_joined["ehr_hadm_id"].iloc[1] == 20000002
    assert v1_joined["ehr_icu_stay"].isna().all()
    write_mimiciv(root / "2.2", icu=False)
    write_mimiciv(root / "3.1")
    found = find_mimiciv(root)
    assert found.version == "3.1" and found.icustays is not None
    assert found.patients == root / "3.1" / "hosp" / "patients.csv.gz"
    flat = write_mimiciv(tmp_path / "flat" / "mimiciv")
    assert find_mimiciv(flat).version == ""
    assert find_mimiciv(tmp_path / "nothing") is None
    with pytest.raises(DataError, match="no MIMIC-IV tables"):
        join_ehr(study_frame(), tmp_path / "nothing")


def test_bad_admission_row_names_file_row_column(tmp_path):
    rows = [list(r) for r in ADMISSIONS]
    rows[2][1] = "2000000x"
    write_mimiciv(tmp_path / "mimiciv" / "3.1", admissions=rows)
    with pytest.raises(DataError, match=r"admissions\.csv\.gz:4: hadm_id: value '2000000x' is not an int"):
        join_ehr(study_frame(), tmp_path / "mimiciv")
    rows = [list(r) for r in ADMISSIONS]
    rows[0][2] = "2180-13-06 22:23:00"
    write_mimiciv(tmp_path / "mimiciv" / "3.1", admissions=rows)
    with pytest.raises(DataError, match=r"admissions\.csv\.gz:2: admittime: .* is not a YYYY-MM-DD HH:MM:SS"):
        join_ehr(study_frame(), tmp_path / "mimiciv")


AGE_NORM = np.array([44, 44, 77, 34, np.nan, 29]) / 84


def test_encode_demographics_minmax(joined):
    x, names = encode_ehr(joined, ("demographics",), "minmax", impute="none")
    assert names == ["sex_male", "sex_female", "age_norm"]
    fill = np.nanmean(AGE_NORM)  # the no-EHR row gets the mean of the available min-max ages
    expected = np.array([[1, 0, AGE_NORM[0]], [1, 0, AGE_NORM[1]], [0, 1, AGE_NORM[2]], [0, 1, AGE_NORM[3]],
                         [0, 0, fill], [0, 1, AGE_NORM[5]]], dtype=np.float32)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def test_encode_age_bins(joined):
    x5, names5 = encode_ehr(joined, ("age",), "bin5", impute="none")
    assert x5.shape == (6, 16)
    assert names5[0] == "age5_(0,20]" and names5[8] == "age5_(55,60]" and names5[-1] == "age5_(90,inf]"
    assert [row.argmax() if row.any() else -1 for row in x5] == [8, 8, 15, 6, -1, 5]
    assert x5.sum(axis=1).tolist() == [1, 1, 1, 1, 0, 1]
    x10, names10 = encode_ehr(joined, ("age",), "bin10", impute="none")
    assert x10.shape == (6, 9)
    assert names10[4] == "age10_(50,60]"
    assert [row.argmax() if row.any() else -1 for row in x10] == [4, 4, 8, 3, -1, 3]


def test_bins_are_right_closed():
    frame = pd.DataFrame({"ehr_age": [16.0, 20.0, 20.5, 90.0, 90.5, 0.0], "view": "", "orientation": "",
                          "ehr_available": True})
    x, _ = encode_ehr(frame, ("age",), "bin5")
    assert [row.argmax() if row.any() else -1 for row in x] == [0, 0, 1, 14, 15, -1]  # 0 is outside (0, 20]


def test_encode_scan_and_inpatient_without_imputation(joined):
    x, names = encode_ehr(joined, ("scan", "inpatient"), "minmax", impute="none")
    assert names == ["view_PA", "view_LATERAL", "view_AP", "view_LL", "orientation_Erect",
                     "orientation_Recumbent", "mortality_alive", "mortality_died", "icu_icu", "icu_not_icu"]
    expected = np.array([
        [1, 0, 0, 0, 1, 0, 1, 0, 0, 1],
        [0, 0, 1, 0, 0, 1, 0, 1, 1, 0],
        [0, 1, 0, 0, 0, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 1, 0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1, 0, 0, 1],
    ], dtype=np.float32)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize(("age_encoding", "dim"), [("minmax", 13), ("bin5", 28), ("bin10", 21)])
def test_group_dimensions_match_the_paper(joined, age_encoding, dim):
    x, names = encode_ehr(joined, ("demographics", "scan", "inpatient"), age_encoding, impute="none")
    assert x.shape == (6, dim) and len(names) == dim
    # paper aliases and order-insensitivity: the variable order is fixed
    y, names2 = encode_ehr(joined, ("clinical", "socio", "image_meta"), age_encoding, impute="none")
    assert names2 == names
    np.testing.assert_array_equal(x, y)


def test_mode_imputation(joined):
    x, _ = encode_ehr(joined, ("scan",), impute="mode")
    # views PA/AP/LATERAL/LL once each: the first label code (alphabetical: AP) wins; orientation Erect 3:1
    np.testing.assert_array_equal(x[3, :4], [0, 0, 1, 0])
    np.testing.assert_array_equal(x[2, 4:], [1, 0])
    np.testing.assert_array_equal(x[5], np.zeros(6))  # rare view: never imputed, all zeros


def test_paper_imputation_is_deterministic_and_complete(joined):
    x, _ = encode_ehr(joined, ("scan",))
    y, _ = encode_ehr(joined, ("scan",))
    np.testing.assert_array_equal(x, y)
    usable = [0, 1, 2, 3, 4]
    assert x[usable, :4].sum(axis=1).tolist() == [1] * 5
    assert x[usable, 4:].sum(axis=1).tolist() == [1] * 5
    np.testing.assert_array_equal(x[[0, 1, 4]], encode_ehr(joined, ("scan",), impute="none")[0][[0, 1, 4]])
    assert x[5].sum() == 0


def test_coverage_counts(joined):
    assert ehr_coverage(joined) == {
        "images": 6, "no MIMIC-IV subject (sex/age zero or mean)": 1, "admission found": 1,
        "view imputed": 1, "orientation imputed": 1, "rare view (zero one-hot)": 1,
    }


def test_encode_errors(tmp_path, joined):
    with pytest.raises(ValueError, match="unknown EHR group"):
        encode_ehr(joined, ("vitals",))
    with pytest.raises(ValueError, match="age_encoding"):
        encode_ehr(joined, ("age",), "bins")
    with pytest.raises(DataError, match="no ehr_\\* columns"):
        encode_ehr(study_frame(), ("demographics",))
    write_mimiciv(tmp_path / "noicu", icu=False)
    no_icu = join_ehr(study_frame(), tmp_path / "noicu")
    with pytest.raises(DataError, match="icustays"):
        encode_ehr(no_icu, ("inpatient",))
    x, _ = encode_ehr(study_frame(), ("scan",), impute="none")  # scan metadata needs no MIMIC-IV
    assert x.shape == (6, 6)
