"""OpenI adapter on hand-written replicas of the XML and Kaggle layouts (spec datasets.md 5 and 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.data.images import decode_image
from harness.data.openi import ADAPTER, OPENI_LABELS, substring_labels
from harness.data.schema import BASE_COLUMNS, DataError

EXPECTED_LABELS = (
    "Atelectasis", "Fibrosis", "Pneumonia", "Effusion", "Lung Lesion", "Cardiomegaly", "Calcified Granuloma",
    "Fracture", "Edema", "Granuloma", "Emphysema", "Hernia", "Mass", "Nodule", "Lung Opacity", "Infiltration",
    "Pleural_Thickening", "Pneumothorax",
)


def _section(label: str, text: str) -> str:
    if not text:
        return f'<AbstractText Label="{label}"/>'  # empty sections are self-closing in the real files
    return f'<AbstractText Label="{label}">{text}</AbstractText>'


def report_xml(n: int, *, indication: str, findings: str, impression: str, major: tuple[str, ...],
               automatic: tuple[str, ...] = (), images: tuple[str, ...] = (),
               comparison: str = "None.") -> str:
    """The element skeleton of ``ecgen-radiology/<n>.xml`` (children in the real order)."""
    mesh = "".join(f"<major>{m}</major>" for m in major) + "".join(f"<automatic>{a}</automatic>"
                                                                    for a in automatic)
    parent = "".join(
        f'<parentImage id="{i}"><figureId>F{k + 1}</figureId><caption>Xray Chest PA and Lateral</caption>'
        f'<panel type="single"><url>/hadoop/storage/radiology/extract/{i}.jpg</url>'
        f"<imgModality>7</imgModality>"
        f'<region type="panel"><globalImageFeatures><colorHistogram>x</colorHistogram></globalImageFeatures>'
        f"</region></panel></parentImage>" for k, i in enumerate(images))
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{n}"/>
  <pmcId id="{n}"/>
  <docSource>CXR</docSource>
  <IUXRId id="{n}"/>
  <licenseType>open-access</licenseType>
  <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
  <ccLicense>byncnd</ccLicense>
  <articleURL/>
  <articleDate>2013-08-01</articleDate>
  <articleType>XR</articleType>
  <publisher>Indiana University</publisher>
  <title>Indiana University Chest X-ray Collection</title>
  <note>The data are drawn from multiple hospital systems.</note>
  <specialty>pulmonary diseases</specialty>
  <subset>CXR</subset>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <Journal><JournalIssue><PubDate><Year>2013</Year></PubDate></JournalIssue></Journal>
      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
      <Abstract>
        {_section("COMPARISON", comparison)}
        {_section("INDICATION", indication)}
        {_section("FINDINGS", findings)}
        {_section("IMPRESSION", impression)}
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH>{mesh}</MeSH>
  {parent}
</eCitation>
"""


REPORTS = {
    1: dict(indication="Positive TB test", major=("Cardiomegaly/borderline", "Pulmonary Artery/enlarged"),
            findings="The cardiac silhouette is borderline enlarged.\n   There are no XXXX of an effusion.",
            impression="Borderline cardiomegaly.",
            automatic=("Calcified Granuloma", "atelectases", "pleural effusions", "calcified granuloma"),
            images=("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")),
    2: dict(indication="XXXX-year-old male, chest pain.", findings="", impression="Normal chest x-XXXX.",
            major=("normal",), images=("CXR2_IM-0652-1001", "CXR2_IM-0652-2001")),  # no <automatic>
    3: dict(indication="Dyspnea", findings="No acute disease.", impression="Normal.", major=("normal",)),
    4: dict(indication="", findings="Patchy opacity.", impression="Infiltrate versus atelectasis.",
            major=("Technical Quality of Image Unsatisfactory ", "Opacity/lung/base/left"),
            automatic=("opacity", "infiltrates", "Pleural thickening"), images=("CXR4_IM-2050-1001-0001",)),
    5: dict(indication="Cough", findings="Clear lungs.", impression="No active disease.", major=("normal",),
            images=("CXR5_IM-0001-1001",)),  # PNG absent
}
PNG_KINDS = {"CXR1_1_IM-0001-3001": "L", "CXR1_1_IM-0001-4001": "rgba", "CXR2_IM-0652-1001": "16bit",
             "CXR2_IM-0652-2001": "L", "CXR4_IM-2050-1001-0001": "L"}


def _png(path: Path, kind: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.random.default_rng(seed).integers(0, 256, (36, 30), dtype=np.uint8)
    if kind == "rgba":
        Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(path)
    elif kind == "16bit":
        Image.fromarray(grey.astype(np.uint16) * 64).save(path)
    else:
        Image.fromarray(grey, "L").save(path)


def write_openi_xml(data_root: Path) -> Path:
    folder = data_root / "openi"
    (folder / "ecgen-radiology").mkdir(parents=True)
    for n, fields in REPORTS.items():
        (folder / "ecgen-radiology" / f"{n}.xml").write_text(report_xml(n, **fields), encoding="utf-8")
    for k, (image_id, kind) in enumerate(PNG_KINDS.items()):
        _png(folder / "NLMCXR_png" / f"{image_id}.png", kind, k)
    return folder


def write_openi_kaggle(data_root: Path, *, images: bool = True) -> Path:
    folder = data_root / "openi"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["uid,MeSH,Problems,image,indication,comparison,findings,impression"]
    for n, f in REPORTS.items():
        heads = ";".join(m.split("/")[0] for m in f["major"])
        quoted = [f'"{f[k]}"' if f[k] else "" for k in ("indication", "findings", "impression")]
        rows.append(",".join([str(n), ";".join(f["major"]), heads, "Xray Chest PA and Lateral", quoted[0],
                              "None.", *quoted[1:]]))  # findings of report 1 span two lines, quoted
    (folder / "indiana_reports.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    proj = ["uid,filename,projection"]
    for n, f in REPORTS.items():
        for k, image_id in enumerate(f.get("images", ())):
            proj.append(f"{n},{image_id[3:]}.dcm.png,{'Frontal' if k == 0 else 'Lateral'}")
    proj.append("77,77_IM-9999-1001.dcm.png,Frontal")  # no report row
    (folder / "indiana_projections.csv").write_text("\n".join(proj) + "\n", encoding="utf-8")
    if images:
        for k, (image_id, kind) in enumerate(PNG_KINDS.items()):
            _png(folder / "images" / "images_normalized" / f"{image_id[3:]}.dcm.png", kind, k)
    return folder


def _row(records, image_id):
    return records.frame.set_index("image_id").loc[image_id]


def test_label_names_follow_torchxrayvision():
    assert OPENI_LABELS == EXPECTED_LABELS
    import pandas as pd

    got = substring_labels(pd.Series(["calcified granuloma|pleural thickening", "infiltrates", ""]))
    assert got["Granuloma"].tolist() == [1.0, 0.0, 0.0]  # substring side effect kept, as in xrv
    assert got["Pleural_Thickening"].tolist() == [1.0, 0.0, 0.0]
    assert got["Infiltration"].tolist() == [0.0, 1.0, 0.0]


def test_load_xml_layout(tmp_path):
    folder = write_openi_xml(tmp_path)
    records = DATASETS.get("openi").load(tmp_path)
    frame = records.frame
    assert list(frame.columns) == [*BASE_COLUMNS, *OPENI_LABELS]
    assert records.skipped == {"report without images": 1, "image file missing": 1}
    assert sorted(frame["image_id"]) == sorted(PNG_KINDS)
    assert set(frame["split"]) == {""} and set(frame["view"]) == {""}  # no split, no view in the XML
    assert set(frame["institution"]) == {"Indiana"}
    assert frame["age"].isna().all() and set(frame["sex"]) == {""}
    assert set(frame[list(OPENI_LABELS)].to_numpy().ravel()) <= {0.0, 1.0}  # never NaN
    for p in frame["path"]:
        assert Path(p).is_file() and Path(p).parent == folder / "NLMCXR_png"

    r = _row(records, "CXR1_1_IM-0001-4001")
    assert r["patient_id"] == "1" and r["study_id"] == "1"
    assert r["indication"] == "Positive TB test"
    assert r["findings"] == "The cardiac silhouette is borderline enlarged. There are no XXXX of an effusion."
    assert r["impression"] == "Borderline cardiomegaly."
    positives = {n for n in OPENI_LABELS if r[n] == 1.0}
    assert positives == {"Calcified Granuloma", "Granuloma", "Atelectasis", "Effusion"}
    # automatic terms, not major ones: "Cardiomegaly/borderline" is a major term only
    assert r["Cardiomegaly"] == 0.0
    r2 = _row(records, "CXR2_IM-0652-1001")
    assert r2["findings"] == "" and r2["impression"] == "Normal chest x-XXXX."  # self-closing FINDINGS
    assert r2[list(OPENI_LABELS)].sum() == 0.0  # no <automatic>: all 0
    r4 = _row(records, "CXR4_IM-2050-1001-0001")
    assert r4["indication"] == ""
    assert {n for n in OPENI_LABELS if r4[n] == 1.0} == {"Lung Opacity", "Infiltration", "Pleural_Thickening"}
    mesh = records.extras["mesh"].set_index("study_id")
    assert mesh.loc["4", "major"] == "opacity/lung/base/left|technical quality of image unsatisfactory"
    assert mesh.loc["2", "automatic"] == "" and len(mesh) == 5
    assert records.extras["label_source"] == "mesh-automatic"
    for image_id in ("CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"):  # RGBA and 16-bit PNGs
        assert decode_image(_row(records, image_id)["path"], 8).shape == (8, 8)


def test_xml_with_kaggle_projections_gives_views(tmp_path):
    write_openi_xml(tmp_path)
    write_openi_kaggle(tmp_path, images=False)
    records = ADAPTER.load(tmp_path)
    assert records.extras["layout"] == "xml"
    assert _row(records, "CXR1_1_IM-0001-3001")["view"] == "FRONTAL"
    assert _row(records, "CXR1_1_IM-0001-4001")["view"] == "LATERAL"


def test_load_kaggle_layout(tmp_path):
    folder = write_openi_kaggle(tmp_path)
    records = ADAPTER.load(tmp_path)
    frame = records.frame
    assert records.extras["layout"] == "kaggle" and records.extras["label_source"] == "mesh-major"
    assert records.skipped == {"image without report": 1, "report without images": 1, "image file missing": 1}
    assert sorted(frame["image_id"]) == sorted(PNG_KINDS)  # ids as in the XML layout
    r = _row(records, "CXR1_1_IM-0001-3001")
    assert r["path"] == str(folder / "images/images_normalized/1_1_IM-0001-3001.dcm.png")
    assert r["view"] == "FRONTAL" and _row(records, "CXR1_1_IM-0001-4001")["view"] == "LATERAL"
    assert r["findings"] == "The cardiac silhouette is borderline enlarged. There are no XXXX of an effusion."
    assert r["Cardiomegaly"] == 1.0  # labelled from the MeSH major terms in this layout
    assert _row(records, "CXR2_IM-0652-1001")["findings"] == ""
    assert _row(records, "CXR4_IM-2050-1001-0001")["Lung Opacity"] == 1.0


def test_check_files_off(tmp_path):
    folder = write_openi_xml(tmp_path)
    records = ADAPTER.load(tmp_path, check_files=False)
    assert len(records.frame) == 6 and records.skipped == {"report without images": 1}
    assert _row(records, "CXR5_IM-0001-1001")["path"] == str(folder / "images" / "CXR5_IM-0001-1001.png")


def test_bad_xml_is_a_data_error_naming_the_file(tmp_path):
    folder = write_openi_xml(tmp_path)
    bad = folder / "ecgen-radiology" / "4.xml"
    bad.write_text(bad.read_text()[:500])  # truncated extraction
    with pytest.raises(DataError, match=r"ecgen-radiology/4\.xml: XML does not parse"):
        ADAPTER.load(tmp_path)
    report = ADAPTER.check(tmp_path)
    assert report.present and not report.ok and "4.xml" in report.problems[0]
    bad.write_text(report_xml(4, indication="", findings="", impression="", major=("normal",),
                              images=("",)))
    with pytest.raises(DataError, match=r"4\.xml: parentImage without an id"):
        ADAPTER.load(tmp_path)


def test_bad_projection_value(tmp_path):
    folder = write_openi_kaggle(tmp_path)
    proj = folder / "indiana_projections.csv"
    proj.write_text(proj.read_text().replace("Lateral", "Oblique", 1))
    with pytest.raises(DataError, match=r"projections\.csv:3: projection: unexpected value 'Oblique'"):
        ADAPTER.load(tmp_path)


def test_check_report(tmp_path):
    assert not ADAPTER.check(tmp_path).present
    write_openi_xml(tmp_path)
    report = ADAPTER.check(tmp_path)
    assert report.ok and report.splits == {"": 5} and report.views == {"": 5}
    assert report.labels["Granuloma"] == 2 and report.labels["Cardiomegaly"] == 0
    assert report.skipped == {"report without images": 1, "image file missing": 1}
    text = report.render()
    assert "XXXX" not in text and "Positive TB" not in text  # no report text in check output
    assert math.isclose(report.n_images, 5)
