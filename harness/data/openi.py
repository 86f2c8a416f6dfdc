"""OpenI / Indiana University chest X-ray collection (Demner-Fushman et al., JAMIA 2016).

3,955 radiology reports with 7,470 PNG images (frontal and lateral), Indiana
University hospital network, distributed by the NLM OpenI service.
Access: public download (``NLMCXR_png.tgz``, ``NLMCXR_reports.tgz``), licence CC
BY-NC-ND 4.0 (stated in every XML). Cite: Demner-Fushman D. et al., "Preparing a
collection of radiology examinations for distribution and retrieval", JAMIA 2016.

Layouts read (``<data root>/openi/``; spec ``datasets.md`` section 5)::

    openi/ecgen-radiology/1.xml ... 3999.xml     # NLMCXR_reports.tgz (or one folder deeper)
    openi/<any folder>/CXR1_1_IM-0001-3001.png   # NLMCXR_png.tgz: <parentImage id>.png, found recursively

or the Kaggle repackaging (``raddar/chest-xrays-indiana-university``)::

    openi/indiana_reports.csv       # uid,MeSH,Problems,image,indication,comparison,findings,impression
    openi/indiana_projections.csv   # uid,filename,projection
    openi/images/images_normalized/1_IM-0001-4001.dcm.png

When the XML reports are present they are read (they carry the ``automatic``
MeSH terms the labels need); an ``indiana_projections.csv`` next to them still
supplies the views.

Records (one row per image):

- ``patient_id`` = ``study_id`` = the report number (``1`` for ``1.xml`` /
  ``uid`` 1): OpenI has no patient identifier and one report is about one
  patient, so patient-level splits are report-level splits.
- ``image_id``: the ``parentImage`` id (``CXR1_1_IM-0001-3001``); Kaggle file
  names map back to it (``1_IM-0001-4001.dcm.png`` -> ``CXR1_IM-0001-4001``).
- ``split`` ``""``: there is no official split (tasks assign patient-hash splits).
- ``view``: OpenI XML carries no projection (it lives in the DICOM headers, which
  the harness does not read), so it is ``""`` (unknown) unless
  ``indiana_projections.csv`` is present: ``Frontal`` -> ``FRONTAL`` (PA or AP
  not known), ``Lateral`` -> ``LATERAL``.
- ``indication`` / ``findings`` / ``impression``: the ``AbstractText`` elements
  labelled ``INDICATION``, ``FINDINGS``, ``IMPRESSION`` (``COMPARISON`` is not a
  records column), whitespace collapsed; self-closing (empty) ones are ``""``.
  The de-identification token ``XXXX`` is kept verbatim.
- labels ``OPENI_LABELS``, the torchxrayvision ``Openi_Dataset`` rule: the
  report's ``MeSH/automatic`` terms, lower-cased and de-duplicated, joined with
  ``|``; a label is 1.0 when its lower-cased name (or a synonym:
  ``pleural thickening``, ``infiltrate``, ``atelectases``) is a substring of
  that string, else 0.0 (never NaN; so ``Granuloma`` also fires on "calcified
  granuloma", as in torchxrayvision). ``Opacity`` / ``Lesion`` are named ``Lung
  Opacity`` / ``Lung Lesion``. The Kaggle CSVs drop the automatic terms, so in
  that layout the same rule runs over the ``MeSH`` (major) terms instead;
  ``Records.extras["label_source"]`` says which (``mesh-automatic`` or
  ``mesh-major``). ``extras["mesh"]`` keeps both term strings per report for
  other labelling schemes.
- ``age`` NaN and ``sex`` ``""``: OpenI has neither.

Skips (counted): ``"report without images"`` (104 real reports have no
``parentImage``), ``"image file missing"`` (with ``check_files``),
``"image without report"`` (Kaggle projections whose uid has no report row),
``"PNG of no report's image"`` (a PNG no report lists: a report file or a
``parentImage`` missing).
Warnings (rows kept, counted): several PNGs for one image id (in two folders, or
both ``<id>.png`` and the Kaggle ``.dcm.png``: ``<id>.png``, then the first in
sorted path order, is used) and, when ``indiana_projections.csv`` is read next to
the XML, images it has no row for (their view stays ``""``).
Bad input is a ``DataError`` naming the file: an XML file that does not parse
(a truncated extraction must be fixed, not silently shrink the cohort), a
``parentImage`` without ``id``, a missing CSV column or an unknown projection.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.check import CheckReport
from harness.data.schema import BASE_COLUMNS, DataError, DataSource, Records, count
from harness.data.tables import ensure_complete

NAME = "openi"
INSTITUTION = "Indiana"
XML_DIR = "ecgen-radiology"
KAGGLE_REPORTS, KAGGLE_PROJECTIONS = "indiana_reports.csv", "indiana_projections.csv"

# torchxrayvision Openi_Dataset.pathologies, in its order, and its synonyms.
XRV_PATHOLOGIES = (
    "Atelectasis", "Fibrosis", "Pneumonia", "Effusion", "Lesion", "Cardiomegaly", "Calcified Granuloma",
    "Fracture", "Edema", "Granuloma", "Emphysema", "Hernia", "Mass", "Nodule", "Opacity", "Infiltration",
    "Pleural_Thickening", "Pneumothorax",
)
SYNONYMS = {"Pleural_Thickening": ("pleural thickening",), "Infiltration": ("infiltrate",),
            "Atelectasis": ("atelectases",)}
RENAME = {"Opacity": "Lung Opacity", "Lesion": "Lung Lesion"}
OPENI_LABELS = tuple(RENAME.get(p, p) for p in XRV_PATHOLOGIES)
SECTIONS = {"INDICATION": "indication", "FINDINGS": "findings", "IMPRESSION": "impression"}
VIEWS = {"Frontal": "FRONTAL", "Lateral": "LATERAL"}
SEVERAL_COPIES = "several PNGs for one image id (<id>.png, then the first in sorted path order, is used)"
NO_PROJECTION = f"image without a row in {KAGGLE_PROJECTIONS} (view blank)"
UNREFERENCED_PNG = "PNG of no report's image (not loaded)"


def substring_labels(terms: pd.Series) -> dict[str, np.ndarray]:
    """torchxrayvision's rule on ``|``-joined lower-case terms: 1.0 if a name or synonym occurs, else 0.0."""
    out = {}
    for pathology in XRV_PATHOLOGIES:
        hit = np.zeros(len(terms), dtype=bool)
        for needle in (pathology.lower(), *SYNONYMS.get(pathology, ())):
            hit |= terms.str.contains(needle, regex=False).to_numpy(dtype=bool)
        out[RENAME.get(pathology, pathology)] = hit.astype(float)
    return out


def _join_terms(terms: list[str]) -> str:
    """Lower-case, de-duplicate, sort, join with ``|`` (torchxrayvision: ``"|".join(np.unique(...))``)."""
    return "|".join(sorted({t.lower() for t in terms if t}))


def _text(element: ET.Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


# --------------------------------------------------------------------------- XML layout


def parse_report(path: Path) -> dict:
    """One ``ecgen-radiology/<n>.xml`` -> report id, sections, MeSH term strings and image ids."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: XML does not parse ({e}); re-extract NLMCXR_reports.tgz") from e
    sections = {label: "" for label in SECTIONS.values()}
    for node in root.iter("AbstractText"):
        name = SECTIONS.get((node.get("Label") or "").strip().upper())
        if name:
            sections[name] = _text(node)
    images = []
    for node in root.findall(".//parentImage"):
        image_id = (node.get("id") or "").strip()
        if not image_id:
            raise DataError(f"{path}: parentImage without an id attribute")
        images.append(image_id)
    major = [_text(n) for n in root.findall(".//MeSH/major")]
    automatic = [_text(n) for n in root.findall(".//MeSH/automatic")]
    return {"report_id": path.stem, **sections, "major": _join_terms(major),
            "automatic": _join_terms(automatic), "images": images}


def find_xml_dir(folder: Path) -> Path | None:
    for candidate in (folder / XML_DIR, *sorted(folder.glob(f"*/{XML_DIR}"))):
        if candidate.is_dir():
            return candidate
    return None


def _xml_images(xml_dir: Path, skipped: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per image, one row per report with its MeSH strings)."""
    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataError(f"{xml_dir}: no .xml reports")
    reports = [parse_report(p) for p in files]
    empty = sum(1 for r in reports if not r["images"])
    if empty:
        skipped["report without images"] = empty
    rows = [{"image_id": image_id, "report_id": r["report_id"], **{s: r[s] for s in SECTIONS.values()}}
            for r in reports for image_id in r["images"]]
    mesh = pd.DataFrame([{"study_id": r["report_id"], "major": r["major"], "automatic": r["automatic"]}
                         for r in reports])
    frame = pd.DataFrame(rows, columns=["image_id", "report_id", *SECTIONS.values()])
    terms = frame["report_id"].map(mesh.set_index("study_id")["automatic"]).fillna("")
    return frame.assign(**substring_labels(terms)), mesh


# --------------------------------------------------------------------------- Kaggle layout


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: cannot parse CSV: {e}") from e
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made an index of the surplus leading fields
        raise DataError(f"{path}:2: row: more fields than the header has columns")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}:1: header: missing column(s) {missing}")
    ensure_complete(path, len(frame.columns))  # pandas pads a cut last row with blanks
    return frame


def _image_id_of_file(filename: str) -> str:
    """``1_IM-0001-4001.dcm.png`` -> ``CXR1_IM-0001-4001`` (the XML parentImage id)."""
    stem = re.sub(r"(\.dcm)?\.png$", "", filename.strip(), flags=re.IGNORECASE)
    return f"CXR{stem}"


def read_projections(path: Path) -> pd.DataFrame:
    """``indiana_projections.csv`` -> uid, image_id, view."""
    frame = _read_csv(path, ("uid", "filename", "projection"))
    bad = ~frame["projection"].str.strip().isin(VIEWS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}:{i + 2}: projection: unexpected value {frame['projection'].iloc[i]!r} "
                        f"(expected Frontal or Lateral)")
    return pd.DataFrame({"uid": frame["uid"].str.strip(), "filename": frame["filename"].str.strip(),
                         "image_id": frame["filename"].map(_image_id_of_file),
                         "view": frame["projection"].str.strip().map(VIEWS)})


def _kaggle_images(folder: Path, skipped: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    reports = _read_csv(folder / KAGGLE_REPORTS, ("uid", "MeSH", "indication", "findings", "impression"))
    reports["uid"] = reports["uid"].str.strip()
    dup = reports["uid"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{folder / KAGGLE_REPORTS}:{i + 2}: uid: {reports['uid'].iloc[i]!r} listed twice")
    projections = read_projections(folder / KAGGLE_PROJECTIONS)
    known = projections["uid"].isin(reports["uid"])
    if (~known).any():
        skipped["image without report"] = int((~known).sum())
    no_images = int((~reports["uid"].isin(projections["uid"])).sum())
    if no_images:
        skipped["report without images"] = no_images
    text = reports.set_index("uid")
    projections = projections[known]
    frame = pd.DataFrame({"image_id": projections["image_id"], "report_id": projections["uid"],
                          **{s: projections["uid"].map(text[s]).map(lambda t: " ".join(t.split()))
                             for s in SECTIONS.values()}})
    major = reports["MeSH"].str.split(";").map(lambda terms: _join_terms([t.strip() for t in terms]))
    mesh = pd.DataFrame({"study_id": reports["uid"], "major": major, "automatic": ""})
    terms = frame["report_id"].map(mesh.set_index("study_id")["major"])
    return frame.assign(**substring_labels(terms)).reset_index(drop=True), mesh


# --------------------------------------------------------------------------- both


def index_pngs(folder: Path, copies: dict[str, int] | None = None) -> dict[str, str]:
    """File name -> path of every PNG below ``folder`` (the archive's top folder is not known).

    Folders are walked in sorted order: of several files with one name the first in sorted path
    order is used, and ``copies`` (when given) receives name -> number of files for such names.
    """
    index: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".png"):
                if name in index and copies is not None:
                    copies[name] = copies.get(name, 1) + 1
                index.setdefault(name, os.path.join(dirpath, name))
    return index


def _kaggle_name(image_id: str) -> str | None:
    return f"{image_id[3:]}.dcm.png" if image_id.startswith("CXR") else None


def _locate(image_ids: pd.Series, pngs: dict[str, str]) -> pd.Series:
    """``<id>.png`` (NLMCXR_png) or ``<id without CXR>.dcm.png`` (Kaggle); NaN when neither exists."""
    def one(image_id: str) -> str | float:
        kaggle = _kaggle_name(image_id)
        return pngs.get(f"{image_id}.png") or (pngs.get(kaggle) if kaggle else None) or np.nan

    return image_ids.map(one)


def _n_candidates(image_id: str, pngs: dict[str, str], copies: dict[str, int]) -> int:
    names = [f"{image_id}.png", _kaggle_name(image_id)]
    return sum(copies.get(n, 1) for n in names if n and n in pngs)


def find_layout(folder: Path) -> str | None:
    if find_xml_dir(folder) is not None:
        return "xml"
    if (folder / KAGGLE_REPORTS).is_file() and (folder / KAGGLE_PROJECTIONS).is_file():
        return "kaggle"
    return None


def load(root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
    """Read ``root/openi`` into Records (see the module docstring for every choice)."""
    root = Path(root).expanduser().resolve()
    folder = root / "openi"
    layout = find_layout(folder)
    if layout is None:
        raise DataError(f"{folder}: neither {XML_DIR}/*.xml nor {KAGGLE_REPORTS} + {KAGGLE_PROJECTIONS}")
    skipped: dict[str, int] = {}
    warnings: dict[str, int] = {}
    notes = [f"layout: {layout}"]
    if layout == "xml":
        frame, mesh = _xml_images(find_xml_dir(folder), skipped)
        frame["view"] = ""
        if (folder / KAGGLE_PROJECTIONS).is_file():
            views = read_projections(folder / KAGGLE_PROJECTIONS).drop_duplicates("image_id")
            frame["view"] = frame["image_id"].map(views.set_index("image_id")["view"]).fillna("")
            notes.append(f"views from {KAGGLE_PROJECTIONS}")
            count(warnings, NO_PROJECTION, int((frame["view"] == "").sum()))
    else:
        frame, mesh = _kaggle_images(folder, skipped)
        views = read_projections(folder / KAGGLE_PROJECTIONS).drop_duplicates("image_id")
        frame["view"] = frame["image_id"].map(views.set_index("image_id")["view"])
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise DataError(f"{folder}: image {frame['image_id'][dup].iloc[0]!r} belongs to more than one report")
    copies: dict[str, int] = {}
    pngs = index_pngs(folder, copies)
    paths = _locate(frame["image_id"], pngs)
    count(warnings, SEVERAL_COPIES, sum(_n_candidates(i, pngs, copies) > 1 for i in frame["image_id"]))
    referenced = {n for i in frame["image_id"] for n in (f"{i}.png", _kaggle_name(i)) if n}
    count(skipped, UNREFERENCED_PNG, len(pngs.keys() - referenced))
    if check_files:
        missing = paths.isna().to_numpy()
        if missing.all() and len(frame):
            raise DataError(f"{folder}: none of the {len(frame)} images is there (expected <id>.png files)")
        if missing.any():
            skipped["image file missing"] = int(missing.sum())
        frame, paths = frame[~missing], paths[~missing]
    fallback = frame["image_id"].map(lambda i: str(folder / "images" / f"{i}.png"))
    frame = frame.assign(
        dataset=NAME, patient_id=frame["report_id"], study_id=frame["report_id"], split="",
        path=paths.fillna(fallback), institution=INSTITUTION, age=np.nan, sex="",
    )[[*BASE_COLUMNS, *OPENI_LABELS]].reset_index(drop=True)
    label_source = "mesh-automatic" if layout == "xml" else "mesh-major"
    records = Records(NAME, frame, OPENI_LABELS, root, data_source, skipped=skipped,
                      extras={"mesh": mesh, "label_source": label_source, "layout": layout, "notes": notes},
                      warnings=warnings)
    records.validate()
    return records


def _report(root: Path, present: bool, loaded: Records | DataError | None) -> CheckReport:
    notes = ()
    if isinstance(loaded, Records):
        notes = (f"labels from {loaded.extras['label_source']}",
                 f"{loaded.frame['study_id'].nunique()} reports with images")
    return CheckReport.from_load(NAME, root, present, loaded, notes)


def check(root: Path) -> CheckReport:
    """Load ``root/openi`` and summarise it (aggregate counts only)."""
    root = Path(root).expanduser().resolve()
    if find_layout(root / "openi") is None:
        rep = _report(root, False, None)
        rep.notes.append(f"expected {root / 'openi'}/{XML_DIR}/*.xml (or {KAGGLE_REPORTS})")
        return rep
    try:
        return _report(root, True, load(root))
    except DataError as e:
        return _report(root, True, e)


class OpeniAdapter:
    """The ``openi`` entry of ``harness.catalog.DATASETS``."""

    name = NAME
    label_names = OPENI_LABELS
    views = ("", "FRONTAL", "LATERAL")  # unknown without indiana_projections.csv
    splits = ()  # no official split

    def load(self, root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
        return load(root, data_source=data_source, check_files=check_files)

    def check(self, root: Path) -> CheckReport:
        return check(root)


ADAPTER = OpeniAdapter()
