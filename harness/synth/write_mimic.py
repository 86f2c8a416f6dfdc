"""Write MIMIC-CXR-JPG 2.1.0 + MIMIC-CXR reports + MIMIC-IV 3.1 (hosp, icu) replicas.

Layout and conventions: ``docs/datasets.md`` sections 1.2-1.5 and 2. The ids
follow the real patterns (subject 1xxxxxxx in ``pNN`` buckets, study 5xxxxxxx,
dicom 5x8 hex, hadm 2xxxxxxx, stay 3xxxxxxx), dates are shifted into 2100-2200
and shared by CXR and EHR, and ``StudyTime`` loses its leading zeros.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.synth import files, labels, pixels
from harness.synth.reports import mimic_report
from harness.synth.world import SourceWorld, Study

METADATA_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
                   "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
                   "PatientOrientationCodeSequence_CodeMeaning")
SPLIT_HEADER = "dicom_id,study_id,subject_id,split"
LABEL_HEADER = "subject_id,study_id," + ",".join(labels.MIMIC_ORDER)
TEST_LABELED_HEADER = "study_id," + ",".join(
    "Airspace Opacity" if c == "Lung Opacity" else c for c in labels.MIMIC_ORDER)
RECORD_HEADER = "subject_id,study_id,dicom_id,path"
STUDY_HEADER = "subject_id,study_id,path"
PATIENTS_HEADER = "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
ADMISSIONS_HEADER = ("subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
                     "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
                     "edouttime,hospital_expire_flag")
ICUSTAYS_HEADER = "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los"
MIMICIV_VERSION = "3.1"

_VIEW_CODE = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral", "": ""}
_CAREUNITS = ("Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
              "Cardiac Vascular Intensive Care Unit (CVICU)", "Coronary Care Unit (CCU)", "Trauma SICU (TSICU)")
_ADMISSION_TYPES = ("AMBULATORY OBSERVATION", "DIRECT EMER.", "DIRECT OBSERVATION", "ELECTIVE", "EU OBSERVATION",
                    "EW EMER.", "OBSERVATION ADMIT", "SURGICAL SAME DAY ADMISSION", "URGENT")
_RACES = ("WHITE", "WHITE", "WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN",
          "OTHER", "UNKNOWN")
_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")


@dataclass
class _Ids:
    subject: dict[int, int] = field(default_factory=dict)      # patient index -> subject_id
    study: dict[int, int] = field(default_factory=dict)        # id(Study) -> study_id
    dicom: dict[int, str] = field(default_factory=dict)        # plan serial -> dicom_id


def _unique(rng: np.random.Generator, lo: int, hi: int, n: int) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < n:
        x = int(rng.integers(lo, hi))
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _assign_ids(world: SourceWorld) -> _Ids:
    rng = np.random.default_rng([world.seed, 11, 2])
    ids = _Ids()
    subjects = _unique(rng, 10_000_000, 20_000_000, len(world.patients))
    subjects[:2] = [10_000_000 + subjects[0] % 1_000_000, 11_000_000 + subjects[1] % 1_000_000]  # >= 2 buckets
    ids.subject = {p.index: s for p, s in zip(world.patients, subjects, strict=True)}
    studies = _unique(rng, 50_000_000, 60_000_000, len(world.studies))
    for st, sid in zip(world.studies, studies, strict=True):
        ids.study[id(st)] = sid
        for plan in st.images:
            h = rng.integers(0, 16, 40)
            hexes = "".join("0123456789abcdef"[int(x)] for x in h)
            ids.dicom[plan.serial] = "-".join(hexes[k:k + 8] for k in range(0, 40, 8))
    return ids


def _when(st: Study) -> dt.datetime:
    p = st.patient
    base = dt.datetime(p.year0, 1, 1) + dt.timedelta(days=p.day0 + st.day)
    return base + dt.timedelta(seconds=int(st.seconds))


def _study_time(seconds: float) -> str:
    whole = int(seconds)
    hhmmss = (whole // 3600) * 10000 + (whole % 3600 // 60) * 100 + whole % 60
    return repr(round(hhmmss + round(seconds - whole, 3), 3))


def _exam(st: Study) -> str:
    views = {p.view for p in st.images}
    if views <= {"AP", ""}:
        return "CHEST (PORTABLE AP)"
    return "CHEST (PA AND LAT)" if len(st.images) > 1 else "CHEST (PRE-OP PA AND LAT)"


def _orientation(view: str, st: Study, rng: np.random.Generator) -> str:
    if rng.random() < 0.1:
        return ""
    return "Recumbent" if view == "AP" and (st.icu or rng.random() < 0.4) else "Erect"


def write(world: SourceWorld, root: Path, progress: Callable[[int], None],
          workers: int | None = None) -> tuple[dict, list[tuple]]:
    """Write the three MIMIC folders under ``root``; returns (counts, ground-truth rows)."""
    jpg, rep = root / "mimic-cxr-jpg", root / "mimic-cxr"
    ids = _assign_ids(world)
    rng = np.random.default_rng([world.seed, 11, 3])
    meta, split, record, study_list, chexpert, test_labeled, truth, image_files = [], [], [], [], [], [], [], []
    sums = []
    images = pixels.encoded(world, [pixels.Job(i, k, "jpeg") for i, st in enumerate(world.studies)
                                    for k in range(len(st.images))], workers)
    for st in world.studies:
        subject, study = ids.subject[st.patient.index], ids.study[id(st)]
        folder = f"files/p{str(subject)[:2]}/p{subject}"
        when, exam = _when(st), _exam(st)
        for plan in st.images:
            dicom = ids.dicom[plan.serial]
            rel = f"{folder}/s{study}/{dicom}.jpg"
            image = next(images)
            files.write_bytes(jpg / rel, image.data)
            sums.append(f"{hashlib.sha256(image.data).hexdigest()}  {rel}\n")
            truth += [("mimic-cxr", f"mimic-cxr-jpg/{rel}", b.finding, b.x, b.y, b.w, b.h) for b in image.boxes]
            image_files.append(rel)
            meta.append((dicom, subject, study, exam, plan.view, plan.size[0], plan.size[1],
                         when.strftime("%Y%m%d"), _study_time(st.seconds), exam, _VIEW_CODE[plan.view],
                         _orientation(plan.view, st, rng)))
            split.append((dicom, study, subject, st.split))
            record.append((subject, study, dicom, f"{folder}/s{study}/{dicom}.dcm"))
            progress(1)
        files.write_text(rep / f"{folder}/s{study}.txt", mimic_report(st, exam, rng))
        study_list.append((subject, study, f"{folder}/s{study}.txt"))
        if "no_label_row" not in st.quirks:
            values = labels.chexpert_values(st.mentions)
            chexpert.append((subject, study, *(values[c] for c in labels.MIMIC_ORDER)))
        if st.split == "test":
            test_labeled.append((study, *_radiologist(st, rng)))
    files.write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, sorted(meta, key=lambda r: r[1:3]))
    files.write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, sorted(split, key=lambda r: (r[2], r[1])))
    rows = sorted(chexpert, key=lambda r: r[:2])
    files.write_csv_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", LABEL_HEADER, rows)
    files.write_csv_gz(jpg / "mimic-cxr-2.0.0-negbio.csv.gz", LABEL_HEADER, rows)
    files.write_csv(jpg / "mimic-cxr-2.1.0-test-set-labeled.csv", TEST_LABELED_HEADER, sorted(test_labeled))
    files.write_text(jpg / "IMAGE_FILENAMES", "".join(f"{r}\n" for r in sorted(image_files)))
    notice = "Synthetic replica written by harness.synth: NOT MIMIC-CXR data; no real patient.\n"
    files.write_text(jpg / "LICENSE.txt", notice)
    files.write_text(jpg / "README", notice)
    files.write_text(jpg / "SHA256SUMS.txt", "".join(sorted(sums, key=lambda line: line.split("  ", 1)[1])))
    files.write_csv_gz(rep / "cxr-record-list.csv.gz", RECORD_HEADER, sorted(record))
    files.write_csv_gz(rep / "cxr-study-list.csv.gz", STUDY_HEADER, sorted(study_list))
    n_adm, n_icu = _write_ehr(world, ids, root / "mimiciv" / MIMICIV_VERSION)
    counts = {"patients": len(world.patients), "studies": len(world.studies), "images": len(meta),
              "label_rows": len(chexpert), "admissions": n_adm, "icustays": n_icu,
              "splits": {s: sum(r[3] == s for r in split) for s in ("train", "validate", "test")}}
    return counts, truth


def _radiologist(st: Study, rng: np.random.Generator) -> list[str]:
    """Test-set labels read from the images (what was drawn), with some blanks."""
    best: dict[str, str] = {}
    for f in st.findings:
        label = labels.CHEXPERT_OF.get(f.name)
        if label:
            best[label] = "1.0" if not f.uncertain or best.get(label) == "1.0" else "-1.0"
    out = []
    for c in labels.MIMIC_ORDER:
        if c == "No Finding":
            out.append("1.0" if not any(k != "Support Devices" for k in best) else "")
        else:
            out.append(best.get(c, "" if rng.random() < 0.1 else "0.0"))
    return out


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _write_ehr(world: SourceWorld, ids: _Ids, base: Path) -> tuple[int, int]:
    """patients, admissions and icustays whose windows bracket the CXR study times."""
    rng = np.random.default_rng([world.seed, 11, 4])
    hadms = iter(_unique(rng, 20_000_000, 30_000_000, len(world.studies)))
    stays = iter(_unique(rng, 30_000_000, 40_000_000, len(world.studies)))
    patients, admissions, icustays = [], [], []
    for p in world.patients:
        mine = [st for st in world.studies if st.patient is p]
        dod = ""
        for st in mine:
            if not st.inpatient:
                continue
            t = _when(st)
            admit = t - dt.timedelta(hours=float(rng.uniform(1, 48)))
            disch = t + dt.timedelta(hours=float(rng.uniform(20, 240)))
            emergency = st.icu or rng.random() < 0.6
            edreg = admit - dt.timedelta(hours=float(rng.uniform(2, 8))) if emergency else None
            kind = str(rng.choice(["EW EMER.", "URGENT", "DIRECT EMER."])) if emergency else \
                str(rng.choice(_ADMISSION_TYPES))
            hadm = next(hadms)
            admissions.append((
                ids.subject[p.index], hadm, _fmt(admit), _fmt(disch), _fmt(disch) if st.died else "", kind,
                "P" + "".join(str(rng.choice(list("0123456789ABCDEF"))) for _ in range(5)),
                "EMERGENCY ROOM" if emergency else "PHYSICIAN REFERRAL",
                "DIED" if st.died else str(rng.choice(["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY"])),
                "Medicare" if st.age > 65 else str(rng.choice(["Other", "Medicaid", "Private"])), "ENGLISH",
                str(rng.choice(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""])), str(rng.choice(_RACES)),
                _fmt(edreg) if edreg else "", _fmt(admit) if edreg else "", int(st.died)))
            if st.died:
                dod = disch.strftime("%Y-%m-%d")
            if st.icu:
                intime = max(admit, t - dt.timedelta(hours=float(rng.uniform(2, 72))))
                outtime = min(disch, t + dt.timedelta(hours=float(rng.uniform(6, 120))))
                unit = str(rng.choice(_CAREUNITS))
                los = round((outtime - intime).total_seconds() / 86400, 4)
                icustays.append((ids.subject[p.index], hadm, next(stays), unit, unit, _fmt(intime), _fmt(outtime), los))
        anchor_age = int(p.age) if p.age <= 89 else 91
        patients.append((ids.subject[p.index], p.sex, anchor_age, p.year0, str(rng.choice(_YEAR_GROUPS)), dod))
    files.write_csv_gz(base / "hosp" / "patients.csv.gz", PATIENTS_HEADER, sorted(patients))
    files.write_csv_gz(base / "hosp" / "admissions.csv.gz", ADMISSIONS_HEADER, sorted(admissions))
    files.write_csv_gz(base / "icu" / "icustays.csv.gz", ICUSTAYS_HEADER, sorted(icustays))
    return len(admissions), len(icustays)
