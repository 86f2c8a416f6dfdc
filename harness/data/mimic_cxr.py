"""MIMIC-CXR-JPG (images, labels, splits) + MIMIC-CXR reports + MIMIC-IV EHR, as ``Records``.

Provenance: Johnson et al., "MIMIC-CXR-JPG, a large publicly available database of
labeled chest radiographs" (arXiv 1901.07042; PhysioNet ``mimic-cxr-jpg`` 2.0.0 /
2.1.0) and "MIMIC-CXR, a de-identified publicly available database of chest
radiographs with free-text reports" (Sci Data 2019; PhysioNet ``mimic-cxr``).
377,110 JPGs, 227,835 studies (227,827 labelled), 65,379 patients, Beth Israel
Deaconess Medical Center 2011-2016. Access: PhysioNet credentialed access + the
Credentialed Health Data Use Agreement 1.5.0: keep the data local, send no report
text or identifiers anywhere (this module logs and records counts only).

Layout read (``root`` is the DATA ROOT; datasets.md sections 1.2 and 2)::

    <root>/mimic-cxr-jpg/[<version>/]mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
                                     mimic-cxr-2.1.0-test-set-labeled.csv     (2.1.0, optional)
                                     files/pNN/pSUBJECT/sSTUDY/<dicom_id>.jpg
    <root>/mimic-cxr/[<version>/]files/pNN/pSUBJECT/sSTUDY.txt               (reports; or
           mimic-cxr/[<version>/]mimic-cxr-reports/files/..., <root>/mimic-cxr-reports/files/...,
           or unzipped next to the jpg study folders)
    <root>/mimiciv/[<version>/]{hosp,core}/{patients,admissions}.csv.gz, icu/icustays.csv.gz

``root`` may also be the ``mimic-cxr-jpg`` folder itself; with several version
folders the highest version holding the metadata wins. Plain ``.csv`` (un-gzipped)
copies are accepted too. Finding these parts is ``harness.data.mimic_layout``; this
module reads what it found.

What ``load`` does, row by row (one row per image = per metadata row):

* split joined on ``dicom_id``; ``validate`` -> ``val``; an image with no split row
  keeps ``split=""`` and is reported in ``Records.problems``;
* labels (one row per study) joined on ``(subject_id, study_id)`` onto every image of
  the study: 1.0 / 0.0 / -1.0 / NaN exactly as in the file (no policy applied);
  ``test_labels="radiologist"`` replaces the test split's labels with the 2.1.0
  single-radiologist file (``Airspace Opacity`` -> ``Lung Opacity``, ``No Findings``
  -> ``No Finding``); test studies it lacks get NaN labels;
* an image whose study has no label row (8 real studies; or no radiologist row) keeps
  NaN labels, ``labelled=False`` and a warning (``"study has no label row"``), so that
  a labelled task removes it (counted) instead of reading "nothing mentioned"; a label
  row whose study has no image in the metadata is counted in ``skipped``;
* warnings (rows kept): ``No Finding`` = 1.0 together with a positive finding (labels
  kept as in the file), a blank ``ViewPosition``, a value outside the documented ones
  (``PA``, ``AP``, ``LATERAL``, ``LL`` and the 12 rare ones such as ``LAO``, ``SWIMMERS``),
  a JPG also present in another version folder (the chosen version's file is used);
* an image listed in the 2.1.0 ``IMAGE_FILENAMES`` whose dicom_id has no metadata row (a
  metadata table with rows missing) is counted in ``skipped``;
* a patient whose images are in more than one split of ``split.csv`` is a problem
  (``harness data check`` fails) and a warning: the split is meant to be patient-disjoint;
* ``ViewPosition`` NaN -> ``view=""``; ``StudyTime`` zero-padded to 6 integer digits
  (``80556.875`` = 08:05:56.875) into ``study_datetime``;
* ``path`` = absolute JPG path; a missing JPG drops the row, counted as
  ``skipped["image file missing"]`` (``check_files=False`` skips the 377k ``stat``
  calls, e.g. for metadata-only benchmarks);
* report sections from ``sSTUDY.txt`` (``harness.data.reports``); a missing report
  keeps the row with empty sections, counted (in images) as ``skipped["report missing"]``; an
  empty (0-byte or blank) report file likewise, as ``skipped["report empty"]``;
* MIMIC-IV ``ehr_*`` columns (``harness.data.ehr``) and ``age`` / ``sex`` from them,
  when MIMIC-IV is found (``<root>/mimiciv`` or ``ehr_root``);
* extra columns: ``study_date``, ``study_datetime``, ``orientation``
  (PatientOrientationCodeSequence_CodeMeaning, ``""`` if missing).

Bad rows (an id that is not an integer, a label such as ``2.0`` or ``yes``, an
unknown split, a duplicated dicom_id) raise ``DataError`` naming file, row and column.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.check import CheckReport
from harness.data.ehr import ehr_coverage, join_ehr
from harness.data.mimic_layout import METADATA, copies_in_other_versions, find_layout, table_file
from harness.data.reports import read_report
from harness.data.schema import (
    CHEXPERT_14,
    CONTRADICTORY,
    DataError,
    DataSource,
    Records,
    contradictory,
    count,
    note_split_leaks,
)
from harness.data.tables import header, read_table

SPLIT = "mimic-cxr-2.0.0-split"
LABELERS = {"chexpert": "mimic-cxr-2.0.0-chexpert", "negbio": "mimic-cxr-2.0.0-negbio"}
TEST_SET_LABELED = "mimic-cxr-2.1.0-test-set-labeled"
RADIOLOGIST_SPELLINGS = {"Airspace Opacity": "Lung Opacity", "No Findings": "No Finding"}
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
INSTITUTION = "BIDMC"
# ViewPosition values of the real metadata (creators' view map): anything else is odd (a warning).
VIEW_POSITIONS = ("PA", "AP", "LATERAL", "LL", "LPO", "RAO", "RPO", "LAO", "AP AXIAL", "XTABLE LATERAL",
                  "AP LLD", "PA LLD", "L5 S1", "SWIMMERS", "AP RLD", "PA RLD")
NO_LABEL_ROW = "study has no label row (labels blank; labelled tasks remove the image)"
NO_RADIOLOGIST_ROW = "test study has no radiologist label row (labels blank; labelled tasks remove the image)"
LABEL_ROW_WITHOUT_IMAGE = "label row of a study without images"
VIEW_BLANK = "ViewPosition blank"
VIEW_UNKNOWN = "ViewPosition not a known value"
OTHER_VERSION_COPY = "JPG also in another MIMIC-CXR-JPG version folder (the chosen version's file is used)"
LISTED_WITHOUT_METADATA = "image in IMAGE_FILENAMES without a metadata row (not loaded)"

_METADATA_COLUMNS = {"dicom_id": "key", "subject_id": "int", "study_id": "int", "ViewPosition": "str",
                     "StudyDate": "date", "StudyTime": "float",
                     "PatientOrientationCodeSequence_CodeMeaning": "str"}
_SPLIT_COLUMNS = {"dicom_id": "key", "study_id": "int", "subject_id": "int", "split": "str"}


def _first_bad_row(path: Path, mask: np.ndarray, column: str, what: str) -> DataError:
    return DataError(f"{path}:{int(np.flatnonzero(mask)[0]) + 2}: {column}: {what}")


def _read_metadata(jpg_root: Path) -> pd.DataFrame:
    path = table_file(jpg_root, METADATA)
    meta = read_table(path, _METADATA_COLUMNS)
    dup = meta["dicom_id"].duplicated().to_numpy()
    if dup.any():
        raise _first_bad_row(path, dup, "dicom_id", "duplicated dicom_id")
    time = meta["StudyTime"].to_numpy(dtype=np.float64)
    whole = np.floor(time)
    hours, minutes, seconds = whole // 10000, (whole // 100) % 100, whole % 100 + (time - whole)
    bad = ~np.isnan(time) & ((time < 0) | (hours > 23) | (minutes > 59) | (seconds >= 60))
    if bad.any():
        raise _first_bad_row(path, bad, "StudyTime", "is not an HHMMSS.ffffff time of day")
    offset = pd.to_timedelta(hours * 3600 + minutes * 60 + seconds, unit="s")
    meta["study_datetime"] = meta["StudyDate"] + offset  # NaT where StudyTime is blank
    return meta


def _read_split(jpg_root: Path) -> pd.DataFrame:
    path = table_file(jpg_root, SPLIT)
    if path is None:
        raise DataError(f"{jpg_root}: missing {SPLIT}.csv.gz")
    split = read_table(path, _SPLIT_COLUMNS)
    bad = ~split["split"].isin(list(SPLIT_NAMES)).to_numpy()
    if bad.any():
        value = split["split"].iloc[int(np.flatnonzero(bad)[0])]
        raise _first_bad_row(path, bad, "split", f"value {value!r} is not train, validate or test")
    dup = split["dicom_id"].duplicated().to_numpy()
    if dup.any():
        raise _first_bad_row(path, dup, "dicom_id", "duplicated dicom_id")
    split["split"] = split["split"].map(SPLIT_NAMES)
    return split.rename(columns={"study_id": "_split_study_id", "subject_id": "_split_subject_id"})


def _read_labels(jpg_root: Path, labeler: str) -> pd.DataFrame:
    if labeler not in LABELERS:
        raise ValueError(f"labeler must be one of {sorted(LABELERS)}, got {labeler!r}")
    path = table_file(jpg_root, LABELERS[labeler])
    if path is None:
        raise DataError(f"{jpg_root}: missing {LABELERS[labeler]}.csv.gz")
    labels = read_table(path, {"subject_id": "int", "study_id": "int", **dict.fromkeys(CHEXPERT_14, "label")})
    dup = labels.duplicated(["subject_id", "study_id"]).to_numpy()
    if dup.any():
        raise _first_bad_row(path, dup, "study_id", "second label row for the same study")
    return labels


def _read_radiologist_labels(jpg_root: Path) -> tuple[pd.DataFrame, list[str]]:
    """The 2.1.0 test-set labels, spellings normalised; also the label names the file lacks."""
    path = table_file(jpg_root, TEST_SET_LABELED)
    if path is None:
        raise DataError(f"{jpg_root}: test_labels='radiologist' needs {TEST_SET_LABELED}.csv "
                        "(MIMIC-CXR-JPG 2.1.0)")
    kinds = {"study_id": "int"}
    renames = {}
    for raw in header(path):
        name = RADIOLOGIST_SPELLINGS.get(raw.strip(), raw.strip())
        if name in CHEXPERT_14:
            kinds[raw], renames[raw] = "label", name
        elif raw not in ("study_id", "subject_id"):
            raise DataError(f"{path}:1: {raw}: not a CheXpert category")
    table = read_table(path, kinds).rename(columns=renames)
    dup = table["study_id"].duplicated().to_numpy()
    if dup.any():
        raise _first_bad_row(path, dup, "study_id", "second label row for the same study")
    return table, [n for n in CHEXPERT_14 if n not in table.columns]


def _attach_reports(frame: pd.DataFrame, report_dirs: tuple[Path, ...]) -> tuple[int, int]:
    """Fill indication / findings / impression in place.

    Returns the numbers of IMAGES without a report file and with an empty one (no text at all:
    a truncated copy; kept, with empty sections, and counted like a missing report).
    """
    for col in ("indication", "findings", "impression"):
        frame[col] = ""
    if not report_dirs:
        return len(frame), 0
    studies = frame[["patient_id", "study_id"]].drop_duplicates()
    found, empty = {}, set()
    for patient, study in zip(studies["patient_id"], studies["study_id"], strict=True):
        relative = os.path.join(f"p{patient[:2]}", f"p{patient}", f"s{study}.txt")
        for base in report_dirs:
            try:
                sections = read_report(base / relative)
            except FileNotFoundError:
                continue
            found[study] = (sections.indication, sections.findings, sections.impression)
            if not any(text for _, text in sections.ordered):
                empty.add(study)
            break
    if found:
        parts = pd.DataFrame.from_dict(found, orient="index",
                                       columns=["indication", "findings", "impression"])
        hit = frame["study_id"].isin(parts.index).to_numpy()
        for col in parts.columns:
            frame.loc[hit, col] = parts[col].reindex(frame.loc[hit, "study_id"]).to_numpy()
    return int((~frame["study_id"].isin(found.keys())).sum()), int(frame["study_id"].isin(empty).sum())


def _listed_without_metadata(jpg_root: Path, dicom_ids: pd.Series) -> int:
    """Entries of ``IMAGE_FILENAMES`` (2.1.0: one line per JPG) whose dicom_id the metadata lacks; 0 without it."""
    listing = jpg_root / "IMAGE_FILENAMES"
    if not listing.is_file():
        return 0
    try:
        names = listing.read_text(encoding="utf-8").split()
    except UnicodeDecodeError as err:
        raise DataError(f"{listing}: encoding: not valid UTF-8; the file is probably corrupt") from err
    stems = {name.rsplit("/", 1)[-1].removesuffix(".jpg") for name in names if name.endswith(".jpg")}
    return len(stems - set(dicom_ids))


def _view_warnings(frame: pd.DataFrame, warnings: dict[str, int]) -> None:
    view = frame["view"]
    count(warnings, VIEW_BLANK, int((view == "").sum()))
    count(warnings, VIEW_UNKNOWN, int((~view.isin([*VIEW_POSITIONS, ""])).sum()))


class MimicCxrAdapter:
    """The ``mimic-cxr`` dataset adapter (see the module docstring)."""

    name = "mimic-cxr"
    label_names = CHEXPERT_14
    # ViewPosition values of the MIMIC-CXR-JPG metadata ("" where it is blank), what task views are checked against
    views = ("PA", "AP", "LATERAL", "LL", "AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD", "LAO", "RAO", "LPO",
             "SWIMMERS", "XTABLE LATERAL", "")
    splits = ("train", "val", "test")  # the official split (mimic-cxr-2.0.0-split.csv.gz)

    def load(  # noqa: PLR0913  (keyword-only options, each a documented cohort/source switch)
        self, root: Path, *, reports_root: Path | None = None, ehr_root: Path | None = None,
        data_source: DataSource = "real", check_files: bool = True, labeler: str = "chexpert",
        test_labels: str = "labeler", ehr_from_edregtime: bool = False,
    ) -> Records:
        """Read one MIMIC installation under ``root`` into image-level records.

        Args:
            root: the data root (or the ``mimic-cxr-jpg`` folder itself).
            reports_root: a MIMIC-CXR ``files/`` tree (or its parent) holding ``sSTUDY.txt`` reports.
            ehr_root: a ``mimiciv`` folder; default ``<root>/mimiciv`` when present.
            data_source: ``real`` or ``synthetic`` (the caller knows; recorded as given).
            check_files: drop (and count) rows whose JPG is missing; ``False`` trusts the metadata.
            labeler: ``chexpert`` (default) or ``negbio`` label file.
            test_labels: ``labeler`` (default) or ``radiologist`` (2.1.0 test-set file for the test split).
            ehr_from_edregtime: widen admission windows to ED registration (``harness.data.ehr``).

        Raises:
            DataError: missing required file, or a bad row (file, row, column).
        """
        if test_labels not in ("labeler", "radiologist"):
            raise ValueError(f"test_labels must be 'labeler' or 'radiologist', got {test_labels!r}")
        layout = find_layout(root, reports_root, ehr_root)
        if layout is None:
            raise DataError(f"{root}: no MIMIC-CXR-JPG metadata ({METADATA}.csv.gz) in the root, "
                            "<root>/mimic-cxr-jpg or <root>/mimic-cxr-jpg/<version>")
        skipped: dict[str, int] = {}
        warnings: dict[str, int] = {}
        frame, problems, extras = self._image_table(layout.jpg_root, labeler, test_labels, skipped, warnings)
        if check_files:
            exists = np.fromiter((os.path.isfile(p) for p in frame["path"]), dtype=bool, count=len(frame))
            if not exists.all():
                skipped["image file missing"] = int((~exists).sum())
                frame = frame[exists].reset_index(drop=True)
            count(warnings, OTHER_VERSION_COPY, copies_in_other_versions(frame["path"], layout.jpg_root))
        _view_warnings(frame, warnings)
        count(warnings, CONTRADICTORY, int(contradictory(frame, CHEXPERT_14).sum()))
        count(warnings, NO_LABEL_ROW, int((~frame["labelled"] & ~frame["_radiologist"]).sum()))
        count(warnings, NO_RADIOLOGIST_ROW, int((~frame["labelled"] & frame["_radiologist"]).sum()))
        frame = frame.drop(columns="_radiologist")
        missing_reports, empty_reports = _attach_reports(frame, layout.report_dirs)
        if missing_reports:
            skipped["report missing"] = missing_reports
        if empty_reports:
            skipped["report empty"] = empty_reports
        frame["age"], frame["sex"] = np.nan, ""
        if layout.ehr is not None:
            frame = join_ehr(frame, layout.ehr, from_edregtime=ehr_from_edregtime)
            frame["age"], frame["sex"] = frame["ehr_age"], frame["ehr_sex"]
            extras["mimiciv_version"] = layout.ehr.version
            extras["ehr_coverage"] = ehr_coverage(frame)
        extras.update(jpg_root=str(layout.jpg_root), report_dirs=[str(d) for d in layout.report_dirs],
                      labeler=labeler, test_labels=test_labels, check_files=check_files)
        split_file = str(table_file(layout.jpg_root, SPLIT))
        unknown = sorted(set(frame["view"]) - {*VIEW_POSITIONS, ""})
        records = Records(self.name, frame, CHEXPERT_14, Path(root), data_source, skipped, problems, extras,
                          warnings=warnings, split_files=dict.fromkeys(SPLIT_NAMES.values(), split_file),
                          unknown_views=tuple(unknown))
        records.validate()
        note_split_leaks(records)
        return records

    def _image_table(self, jpg_root: Path, labeler: str, test_labels: str, skipped: dict[str, int],
                     warnings: dict[str, int]):
        meta = _read_metadata(jpg_root)
        split = _read_split(jpg_root)
        labels = _read_labels(jpg_root, labeler)
        frame = meta.merge(split, on="dicom_id", how="left", validate="one_to_one")
        joined = frame["split"].notna().to_numpy()
        mismatch = joined & ((frame["_split_study_id"] != frame["study_id"])
                             | (frame["_split_subject_id"] != frame["subject_id"])).to_numpy()
        if mismatch.any():
            dicom = frame["dicom_id"].iloc[int(np.flatnonzero(mismatch)[0])]
            row = int(np.flatnonzero((split["dicom_id"] == dicom).to_numpy())[0]) + 2
            raise DataError(f"{table_file(jpg_root, SPLIT)}:{row}: study_id: "
                            f"disagrees with {METADATA} for this dicom_id")
        problems, extras = [], {}
        if not joined.all():
            problems.append(f"{table_file(jpg_root, SPLIT).name}: split: {int((~joined).sum())} metadata image(s) "
                            "have no split row (kept with split '')")
        frame = frame.merge(labels, on=["subject_id", "study_id"], how="left", validate="many_to_one",
                            indicator="_label_row")
        no_row = (frame["_label_row"] == "left_only").to_numpy()
        extras["studies_without_label_row"] = int(frame.loc[no_row, "study_id"].nunique())
        frame["labelled"], frame["_radiologist"] = ~no_row, False
        imaged = labels.set_index(["subject_id", "study_id"]).index.isin(
            pd.MultiIndex.from_frame(meta[["subject_id", "study_id"]]))
        count(skipped, LABEL_ROW_WITHOUT_IMAGE, int((~imaged).sum()))
        count(skipped, LISTED_WITHOUT_METADATA, _listed_without_metadata(jpg_root, meta["dicom_id"]))
        if test_labels == "radiologist":
            self._use_radiologist_labels(frame, jpg_root, problems, extras)
        return self._records_frame(frame, jpg_root), problems, extras

    @staticmethod
    def _use_radiologist_labels(frame: pd.DataFrame, jpg_root: Path, problems: list[str],
                                extras: dict) -> None:
        table, absent = _read_radiologist_labels(jpg_root)
        test = (frame["split"] == "test").to_numpy()
        rad = table.set_index("study_id").reindex(frame.loc[test, "study_id"].to_numpy())
        for name in CHEXPERT_14:
            frame.loc[test, name] = rad[name].to_numpy() if name in rad.columns else np.nan
        if absent:
            problems.append(f"{TEST_SET_LABELED}.csv: header: no column for {absent} (test labels NaN)")
        test_studies = frame.loc[test, "study_id"]
        labelled = test_studies.isin(table["study_id"])
        frame.loc[test, "labelled"] = labelled.to_numpy()
        frame.loc[test, "_radiologist"] = True
        extras["test_studies_with_radiologist_labels"] = int(test_studies[labelled].nunique())
        extras["test_studies_without_radiologist_labels"] = int(test_studies[~labelled].nunique())

    @staticmethod
    def _records_frame(frame: pd.DataFrame, jpg_root: Path) -> pd.DataFrame:
        patient = frame["subject_id"].astype(str)
        study = frame["study_id"].astype(str)
        files = str(jpg_root / "files")
        paths = [f"{files}/p{p[:2]}/p{p}/s{s}/{d}.jpg" for p, s, d in zip(patient, study, frame["dicom_id"],
                                                                            strict=True)]
        out = pd.DataFrame({
            "dataset": "mimic-cxr",
            "image_id": frame["dicom_id"].astype(str).to_numpy(),
            "patient_id": patient.to_numpy(),
            "study_id": study.to_numpy(),
            "view": frame["ViewPosition"].fillna("").astype(str).str.strip().to_numpy(),
            "split": frame["split"].fillna("").to_numpy(),
            "path": paths,
            "institution": INSTITUTION,
            "study_date": frame["StudyDate"].to_numpy(),
            "study_datetime": frame["study_datetime"].to_numpy(),
            "orientation": frame["PatientOrientationCodeSequence_CodeMeaning"].fillna("").astype(str)
            .str.strip().to_numpy(),
        })
        for name in CHEXPERT_14:
            out[name] = frame[name].to_numpy(dtype=np.float64)
        out["labelled"] = frame["labelled"].to_numpy(dtype=bool)
        out["_radiologist"] = frame["_radiologist"].to_numpy(dtype=bool)
        return out

    def check(self, root: Path) -> CheckReport:
        """Load with file checks and summarise; problems instead of exceptions."""
        root = Path(root)
        try:
            layout = find_layout(root)
        except DataError as err:
            return CheckReport(self.name, root, present=True, problems=[str(err)])
        if layout is None:
            return CheckReport(self.name, root, present=False,
                               notes=[f"expected <root>/mimic-cxr-jpg/{METADATA}.csv.gz"])
        try:
            records = self.load(root)
        except DataError as err:
            return CheckReport(self.name, root, present=True, problems=[str(err)])
        notes = (f"jpg root: {layout.jpg_root}",
                 f"report folders: {len(layout.report_dirs)}",
                 f"MIMIC-IV: {layout.ehr.version or 'unversioned'}" if layout.ehr else "MIMIC-IV: not found",
                 "2.1.0 radiologist test labels: "
                 + ("yes" if table_file(layout.jpg_root, TEST_SET_LABELED) else "no"))
        return CheckReport.from_load(self.name, root, True, records, notes)


ADAPTER = MimicCxrAdapter()
