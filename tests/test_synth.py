"""The synthetic CXR world: real layouts byte for byte, reproducible, findings visible, EHR correlated.

Worlds here are tiny (scale 0.04: the per-source minimum patient counts), so the
whole file runs in seconds; the full-scale world is exercised by the benchmark.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.data.roots import DataRoot, resolve_data_root, source_env_var
from harness.data.schema import DataError
from harness.synth import MARKER, TRUTH, write_world
from harness.synth.anatomy import sample_anatomy
from harness.synth.calibration import default_calibration, prevalence_targets
from harness.synth.findings import Finding
from harness.synth.render import ImageStyle, render
from harness.synth.world import build_source

SCALE, SEED = 0.04, 3
HEADERS_KEY_META = "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, scale=SCALE, seed=SEED, progress=False, calibration="spec", workers=2)
    return root


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return fh.readline()


# Headers exactly as docs/datasets.md quotes them (literal copies, not imported from the writers).
HEADERS = {
    "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz":
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
        "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning",
    "mimic-cxr-jpg/mimic-cxr-2.0.0-split.csv.gz": "dicom_id,study_id,subject_id,split",
    "mimic-cxr-jpg/mimic-cxr-2.0.0-chexpert.csv.gz":
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
        "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices",
    "mimic-cxr-jpg/mimic-cxr-2.0.0-negbio.csv.gz":
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
        "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices",
    "mimic-cxr/cxr-record-list.csv.gz": "subject_id,study_id,dicom_id,path",
    "mimic-cxr/cxr-study-list.csv.gz": "subject_id,study_id,path",
    "mimiciv/3.1/hosp/patients.csv.gz": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "mimiciv/3.1/hosp/admissions.csv.gz":
        "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,"
        "discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag",
    "mimiciv/3.1/icu/icustays.csv.gz":
        "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los",
    "chexpert/CheXpert-v1.0-small/train.csv":
        "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
        "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
        "Fracture,Support Devices",
    "chexpert/CheXpert-v1.0-small/valid.csv":
        "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
        "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
        "Fracture,Support Devices",
    "nih14/Data_Entry_2017_v2020.csv":
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]",
    "nih14/Data_Entry_2017.csv":
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],",
    "nih14/BBox_List_2017.csv": "Image Index,Finding Label,Bbox [x,y,w,h],,,",
    "_synthetic/ground_truth.csv.gz": "dataset,image,finding,x,y,w,h",
}


@pytest.mark.parametrize("rel", sorted(HEADERS))
def test_headers_are_byte_exact(world: Path, rel: str) -> None:
    assert _first_line(world / rel) == HEADERS[rel] + "\n"


def test_gzip_files_are_gzip_with_zero_mtime(world: Path) -> None:
    for path in world.rglob("*.csv.gz"):
        raw = path.read_bytes()
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0", path


def test_id_patterns(world: Path) -> None:
    meta = pd.read_csv(world / HEADERS_KEY_META, dtype=str)
    assert meta["dicom_id"].str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all()
    assert meta["subject_id"].str.fullmatch(r"1\d{7}").all() and meta["study_id"].str.fullmatch(r"5\d{7}").all()
    assert meta["subject_id"].str[:2].nunique() >= 2  # >= 2 pNN buckets
    assert meta["StudyDate"].str.fullmatch(r"2[12]\d{6}").all()
    jpgs = sorted(p.relative_to(world / "mimic-cxr-jpg").as_posix() for p in world.glob("mimic-cxr-jpg/files/**/*.jpg"))
    assert jpgs and all(re.fullmatch(r"files/p1\d/p1\d{7}/s5\d{7}/([0-9a-f]{8}-){4}[0-9a-f]{8}\.jpg", p) for p in jpgs)
    reports = [p.relative_to(world / "mimic-cxr").as_posix() for p in world.glob("mimic-cxr/files/**/*.txt")]
    assert reports and all(re.fullmatch(r"files/p1\d/p1\d{7}/s5\d{7}\.txt", p) for p in reports)
    adm = pd.read_csv(world / "mimiciv/3.1/hosp/admissions.csv.gz", dtype=str, keep_default_na=False)
    assert adm["hadm_id"].str.fullmatch(r"2\d{7}").all()
    assert adm["admit_provider_id"].str.fullmatch(r"P[0-9A-Z]{5}").all()
    train = pd.read_csv(world / "chexpert/CheXpert-v1.0-small/train.csv", dtype=str)
    assert train["Path"].str.fullmatch(
        r"CheXpert-v1\.0-small/train/patient\d{5}/study\d+/view\d_(frontal|lateral)\.jpg").all()
    nih = pd.read_csv(world / "nih14/Data_Entry_2017_v2020.csv")
    assert nih.shape[1] == 11 and nih["Image Index"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
    ids = [p.stem for p in (world / "openi/NLMCXR_png").glob("*.png")]
    pattern = r"CXR\d+_IM-\d{4}-\d{4}|CXR\d+_IM-\d{4}-\d{4}-\d{4}|CXR\d+_\d+_IM-\d{4}-\d{4}"
    assert ids and all(re.fullmatch(pattern, i) for i in ids)
    assert any(re.fullmatch(r"CXR\d+_IM-\d{4}-\d{4}-\d{4}", i) for i in ids)
    for xml in (world / "openi/ecgen-radiology").glob("*.xml"):
        assert f'<uId id="CXR{xml.stem}"/>' in xml.read_text()


def test_nasty_cases_are_planted(world: Path) -> None:
    meta = pd.read_csv(world / HEADERS_KEY_META, dtype={"StudyTime": str})
    assert meta["ViewPosition"].isna().any()
    assert (meta["StudyTime"].astype(float) < 100000).any()
    split = pd.read_csv(world / "mimic-cxr-jpg/mimic-cxr-2.0.0-split.csv.gz")
    assert set(split["split"]) == {"train", "validate", "test"}
    labels = pd.read_csv(world / "mimic-cxr-jpg/mimic-cxr-2.0.0-chexpert.csv.gz")
    assert meta["study_id"].nunique() == labels["study_id"].nunique() + 1  # one study without a label row
    assert labels.iloc[:, 2:].isna().all(axis=1).any()  # an all-blank row
    values = labels.iloc[:, 2:].to_numpy().ravel()
    assert set(values[~np.isnan(values)]) <= {1.0, 0.0, -1.0}
    patients = pd.read_csv(world / "mimiciv/3.1/hosp/patients.csv.gz")
    admissions = pd.read_csv(world / "mimiciv/3.1/hosp/admissions.csv.gz")
    assert (patients["anchor_age"] == 91).any() and not set(patients["subject_id"]) <= set(admissions["subject_id"])
    texts = [p.read_text() for p in world.glob("mimic-cxr/files/**/*.txt")]
    assert any("WET READ:" in t and "_" * 78 in t for t in texts)
    assert any("FINDINGS:" in t and "IMPRESSION:" not in t for t in texts)
    assert any("FINDINGS:" not in t and "IMPRESSION:" not in t for t in texts)
    train = pd.read_csv(world / "chexpert/CheXpert-v1.0-small/train.csv")
    assert (train["Sex"] == "Unknown").any() and {0, 90} <= set(train["Age"])
    assert train.loc[train["Frontal/Lateral"] == "Lateral", "AP/PA"].isna().all()
    assert (train.loc[train["Frontal/Lateral"] == "Frontal", "AP/PA"] == "LL").any()
    assert ((train["No Finding"] == 1.0) & (train["Support Devices"] == 1.0)).any()
    assert (train.iloc[:, 5:] == -1.0).any().any() and train.iloc[:, 5:].isna().all(axis=1).any()
    valid = pd.read_csv(world / "chexpert/CheXpert-v1.0-small/valid.csv")
    assert set(np.unique(valid.iloc[:, 5:])) <= {0.0, 1.0} and valid["Path"].str.contains("patient64541").any()
    modes = {Image.open(p).mode for p in world.glob("nih14/images_*/images/*.png")}
    assert modes == {"L", "RGBA"}
    boxes = pd.read_csv(world / "nih14/BBox_List_2017.csv", skiprows=1, header=None)
    assert boxes.shape[1] == 6 and len(boxes) >= 1
    assert set(boxes[0]) <= set((world / "nih14/test_list.txt").read_text().split())
    xmls = [p.read_text() for p in (world / "openi/ecgen-radiology").glob("*.xml")]
    assert any("<parentImage" not in x for x in xmls)
    assert any('<AbstractText Label="FINDINGS"/>' in x for x in xmls)
    assert sum("XXXX" in x for x in xmls) > len(xmls) // 2
    assert any("<major>No Indexing</major>" in x for x in xmls)
    assert any("<major>Technical Quality of Image Unsatisfactory </major>" in x for x in xmls)
    assert any("<major>normal</major>" not in x and "<automatic>" not in x for x in xmls)


def test_mimic_reports_have_the_raw_shape(world: Path) -> None:
    for path in world.glob("mimic-cxr/files/**/*.txt"):
        lines = path.read_text().split("\n")[:-1]
        assert " " * 33 + "FINAL REPORT" in lines, path
        assert all(line.startswith(" ") and len(line) <= 79 for line in lines), path
        assert re.search(r"\n (INDICATION|HISTORY):  ___ year old (man|woman) with ", path.read_text())


def test_reproducible_byte_for_byte(world: Path, tmp_path: Path) -> None:
    # the fixture rendered in two worker processes, this copy in one: the bytes do not depend on it
    write_world(tmp_path, scale=SCALE, seed=SEED, progress=False, calibration="spec", workers=1)
    mine = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    again = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert mine == again
    different = [rel for rel in mine if (world / rel).read_bytes() != (tmp_path / rel).read_bytes()]
    assert different == []


def test_other_seed_gives_another_world() -> None:
    a = build_source("nih14", scale=0.05, seed=0)
    b = build_source("nih14", scale=0.05, seed=1)
    assert [st.age for st in a.studies] != [st.age for st in b.studies]


def test_marker_and_ground_truth(world: Path) -> None:
    marker = json.loads((world / MARKER).read_text())
    assert marker["generator"] == "harness.synth" and marker["seed"] == SEED and marker["scale"] == SCALE
    assert marker["sources"] == ["mimic", "chexpert", "nih14", "openi"] and marker["data_source"] == "synthetic"
    assert marker["counts"]["mimic"]["images"] == len(list(world.glob("mimic-cxr-jpg/files/**/*.jpg")))
    truth = pd.read_csv(world / TRUTH)
    assert set(truth["dataset"]) == {"mimic-cxr", "chexpert", "nih14", "openi"}
    for rel, rows in truth.groupby("image"):
        h, w = np.asarray(Image.open(world / rel)).shape[:2]
        assert (rows["x"] >= 0).all() and (rows["x"] + rows["w"] <= w).all(), rel
        assert (rows["y"] >= 0).all() and (rows["y"] + rows["h"] <= h).all(), rel


def _pair(finding: Finding, view: str = "frontal") -> tuple[np.ndarray, np.ndarray, tuple]:
    anatomy = sample_anatomy(np.random.default_rng(5), age=60, sex="M")
    style = ImageStyle()
    plain = render(anatomy, (), view=view, size=(128, 128), style=style, rng=np.random.default_rng(9))
    sick = render(anatomy, (finding,), view=view, size=(128, 128), style=style, rng=np.random.default_rng(9))
    box = next(b for b in sick.boxes if b.finding == finding.name)
    return plain.image.astype(float), sick.image.astype(float), (int(box.y), int(box.y + box.h),
                                                                   int(box.x), int(box.x + box.w))


@pytest.mark.parametrize("finding,brighter", [
    (Finding("pleural_effusion", side="right", zone="lower", severity=0.8), True),
    (Finding("consolidation", side="left", zone="lower", x=0.5, y=0.75, severity=0.8), True),
    (Finding("mass", side="right", zone="upper", x=0.5, y=0.3, severity=0.8), True),
    (Finding("pneumothorax", side="left", zone="upper", severity=0.8), False),
])
def test_findings_are_visible_where_drawn(finding: Finding, brighter: bool) -> None:
    plain, sick, (y0, y1, x0, x1) = _pair(finding)
    delta = sick[y0:y1, x0:x1].mean() - plain[y0:y1, x0:x1].mean()
    assert (delta > 8) if brighter else (delta < -1), delta
    outside = np.ones_like(plain, dtype=bool)
    outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False
    assert abs((sick - plain)[outside].mean()) < 1.0  # the rest of the image is unchanged


def test_cardiomegaly_widens_the_heart() -> None:
    anatomy = sample_anatomy(np.random.default_rng(5), age=60, sex="M")
    widths = []
    for severity in (0.1, 0.9):
        out = render(anatomy, (Finding("cardiomegaly", severity=severity),), view="frontal", size=(128, 128),
                     style=ImageStyle(), rng=np.random.default_rng(1))
        widths.append(out.boxes[0].w)
    assert widths[1] > widths[0] * 1.1


def test_ehr_is_correlated_with_findings() -> None:
    world = build_source("mimic", scale=1.0, seed=0)  # no pixels: fast
    frame = pd.DataFrame({
        "age": [st.age for st in world.studies], "icu": [st.icu for st in world.studies],
        "ap": [any(p.view == "AP" for p in st.images) for st in world.studies],
        **{name: [any(f.name == name for f in st.findings) for st in world.studies]
           for name in ("cardiomegaly", "support_devices", "pleural_effusion")}})
    assert frame.loc[frame["cardiomegaly"], "age"].mean() > frame.loc[~frame["cardiomegaly"], "age"].mean() + 3
    assert frame.loc[frame["icu"], "ap"].mean() > 0.9 > 0.5 > frame.loc[~frame["icu"], "ap"].mean()
    assert frame.loc[frame["icu"], "support_devices"].mean() > 3 * frame.loc[~frame["icu"], "support_devices"].mean()
    assert frame.loc[frame["icu"], "pleural_effusion"].mean() > frame.loc[~frame["icu"], "pleural_effusion"].mean()
    assert 250 <= len(world.patients) <= 350 and 550 <= len(world.studies) <= 850


def test_prevalence_follows_the_published_counts() -> None:
    world = build_source("nih14", scale=1.0, seed=0)
    targets = prevalence_targets("nih14")
    for name in ("pleural_effusion", "lung_opacity", "atelectasis"):
        rate = np.mean([any(f.name == name for f in st.findings) for st in world.studies])
        assert abs(rate - targets[name]) < 0.05, (name, rate, targets[name])


def test_calibration_without_torchxrayvision() -> None:
    if importlib.util.find_spec("torchxrayvision") is not None:
        pytest.skip("torchxrayvision is installed: the absent path is not testable here")
    assert default_calibration() == "spec"
    with pytest.raises(RuntimeError, match="not installed"):
        prevalence_targets("chexpert", "torchxrayvision")
    with pytest.raises(ValueError, match="calibration"):
        prevalence_targets("chexpert", "nonsense")


# --- calibration: never from what is installed, torchxrayvision only when asked for ------------------------

# the CheXpert columns the calibration reads (literal copy of the labeller's names, as in train.csv)
XRV_CHEXPERT_COLUMNS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                        "Pleural Other", "Fracture", "Support Devices")


def use_fake_torchxrayvision(monkeypatch, site: Path, **kwargs) -> Path:
    """Put the stand-in first on sys.path and forget an already imported real torchxrayvision (installed in the
    venv: ``importlib.util.find_spec`` answers from ``sys.modules`` before it searches the path)."""
    import sys

    for name in [m for m in sys.modules if m == "torchxrayvision" or m.startswith("torchxrayvision.")]:
        monkeypatch.delitem(sys.modules, name)
    path = fake_torchxrayvision(site, **kwargs)
    monkeypatch.syspath_prepend(str(path))
    return path


def fake_torchxrayvision(site: Path, effusion_rows: int = 0) -> Path:
    """A minimal importable ``torchxrayvision`` under ``site``: an empty package plus the two bundled
    metadata files the calibration reads, 10 rows each (``effusion_rows`` CheXpert rows with an effusion,
    5 with cardiomegaly; one NIH image with an effusion). Returns ``site`` (to put on sys.path)."""
    data = site / "torchxrayvision" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (site / "torchxrayvision" / "__init__.py").write_text('"""Stand-in: only its bundled metadata is read."""\n')
    rows = ["Path,Sex," + ",".join(XRV_CHEXPERT_COLUMNS)]
    for i in range(10):
        labels = {"Pleural Effusion": 1.0 if i < effusion_rows else 0.0, "Cardiomegaly": -1.0 if i < 5 else ""}
        rows.append(f"CheXpert-v1.0/train/patient{i:05d}/study1/view1_frontal.jpg,Male,"
                    + ",".join(str(labels.get(c, "")) for c in XRV_CHEXPERT_COLUMNS))
    (data / "chexpert_train.csv.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0))
    nih = ["Image Index,Finding Labels,Patient ID", "00000001_000.png,Effusion|Infiltration,1"]
    nih += [f"0000000{i}_000.png,No Finding,{i}" for i in range(2, 11)]
    (data / "Data_Entry_2017_v2020.csv.gz").write_bytes(gzip.compress(("\n".join(nih) + "\n").encode(), mtime=0))
    return site


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _chexpert_fingerprint(root: Path) -> str:
    from harness.catalog import DATASETS

    return DATASETS.get("chexpert").load(root, data_source="synthetic").fingerprint()


SMALL = {"sources": ("chexpert", "nih14"), "scale": 0.01, "seed": 3, "progress": False}


def test_installed_torchxrayvision_changes_nothing_by_itself(tmp_path: Path, monkeypatch) -> None:
    from harness.data.roots import synthetic_cache_dir
    from harness.synth.world import GENERATOR_VERSION

    before = write_world(tmp_path / "before", **SMALL)
    use_fake_torchxrayvision(monkeypatch, tmp_path / "site")
    assert importlib.util.find_spec("torchxrayvision") is not None  # "installed" now
    after = write_world(tmp_path / "after", **SMALL)
    assert before == after and after["calibration"] == "spec" and "calibration_sha256" not in after
    assert _file_bytes(tmp_path / "before") == _file_bytes(tmp_path / "after")  # every byte of every file
    assert _chexpert_fingerprint(tmp_path / "before") == _chexpert_fingerprint(tmp_path / "after")
    assert default_calibration() == "spec" and prevalence_targets("chexpert")["pleural_effusion"] == 0.44
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    assert synthetic_cache_dir(3, 0.01, env) == tmp_path / "cache" / "synth" / f"v{GENERATOR_VERSION}-s3-x0.01"


def test_torchxrayvision_calibration_when_asked_is_its_own_world(tmp_path: Path, monkeypatch) -> None:
    from harness.data.roots import synthetic_cache_dir
    from harness.synth import world_identity

    write_world(tmp_path / "spec", **SMALL)
    use_fake_torchxrayvision(monkeypatch, tmp_path / "site")
    marker = write_world(tmp_path / "xrv", **SMALL, calibration="torchxrayvision")
    digest = marker["calibration_sha256"]
    assert marker["calibration"] == "torchxrayvision" and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert json.loads((tmp_path / "xrv" / MARKER).read_text())["calibration_sha256"] == digest
    # the rates come from the fake package's files: 0/10 effusions (floored at 1 %), 5/10 uncertain cardiomegaly
    targets = prevalence_targets("chexpert", "torchxrayvision")
    assert targets["pleural_effusion"] == 0.01 and targets["cardiomegaly"] == 0.5
    assert prevalence_targets("nih14", "torchxrayvision")["pleural_effusion"] == pytest.approx(0.1)
    assert prevalence_targets("mimic", "torchxrayvision") == prevalence_targets("mimic")  # no MIMIC metadata
    spec_files, xrv_files = _file_bytes(tmp_path / "spec"), _file_bytes(tmp_path / "xrv")
    label_csv = "chexpert/CheXpert-v1.0-small/train.csv"
    assert spec_files[label_csv] != xrv_files[label_csv]
    assert _chexpert_fingerprint(tmp_path / "spec") != _chexpert_fingerprint(tmp_path / "xrv")
    assert world_identity(tmp_path / "xrv") == {**world_identity(tmp_path / "spec"),
                                                "calibration": "torchxrayvision", "calibration_sha256": digest}
    # the default world: its own folder, named with the files' digest, only through the variable
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    plain = synthetic_cache_dir(3, 0.01, env)
    tagged = synthetic_cache_dir(3, 0.01, {**env, "HARNESS_SYNTH_CALIBRATION": "torchxrayvision"})
    assert tagged == plain.with_name(f"{plain.name}-torchxrayvision-{digest[:12]}")
    # another torchxrayvision release (other metadata): other rates, another digest, another folder
    fake_torchxrayvision(tmp_path / "site", effusion_rows=5)
    assert prevalence_targets("chexpert", "torchxrayvision")["pleural_effusion"] == 0.5
    moved = synthetic_cache_dir(3, 0.01, {**env, "HARNESS_SYNTH_CALIBRATION": "torchxrayvision"})
    assert moved != tagged and moved.name.startswith(f"{plain.name}-torchxrayvision-")


def test_default_root_takes_the_calibration_only_from_the_variable(tmp_path: Path, monkeypatch, capsys) -> None:
    from harness.cli import main

    use_fake_torchxrayvision(monkeypatch, tmp_path / "site")
    env = {"HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_SYNTH_SCALE": "0.01",
           "HARNESS_SYNTH_CALIBRATION": "torchxrayvision"}
    root = resolve_data_root(None, environ=env)
    marker = json.loads((root.path / MARKER).read_text())
    assert root.data_source == "synthetic" and marker["calibration"] == "torchxrayvision"
    assert root.path.name == f"v{marker['generator_version']}-s0-x0.01-torchxrayvision-" \
                             f"{marker['calibration_sha256'][:12]}"
    assert main(["-q", "data", "synth", "--out", str(tmp_path / "cli"), "--sources", "nih14", "--scale", "0.01",
                 "--calibration", "torchxrayvision"]) == 0
    assert "calibration torchxrayvision" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / MARKER).read_text())["calibration_sha256"] == marker["calibration_sha256"]


def test_write_world_rejects_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source"):
        write_world(tmp_path, sources=("mimic", "padchest"), progress=False)


# --- data roots -------------------------------------------------------------------------------------------


def test_explicit_root_is_real_without_marker(tmp_path: Path) -> None:
    (tmp_path / "nih14").mkdir()
    (tmp_path / "nih14" / "Data_Entry_2017_v2020.csv").write_text("x\n")
    root = resolve_data_root(tmp_path, environ={})
    assert isinstance(root, DataRoot) and root.data_source == "real" and root.path == tmp_path
    assert root.source_present("nih14") and not root.source_present("chexpert")
    with pytest.raises(DataError, match="HARNESS_ROOT_CHEXPERT"):
        root.source_path("chexpert")
    assert resolve_data_root(None, environ={"HARNESS_DATA_ROOT": str(tmp_path)}).path == tmp_path
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_root(tmp_path / "missing", environ={})


def test_synthetic_root_and_overrides(world: Path, tmp_path: Path) -> None:
    root = resolve_data_root(world, environ={})
    assert root.data_source == "synthetic" and root.source_present("mimic-cxr") and root.source_present("openi")
    env = {"HARNESS_CACHE": str(tmp_path / "cache"), source_env_var("mimic-cxr-jpg"): str(world / "mimic-cxr-jpg")}
    assert source_env_var("mimic-cxr-jpg") == "HARNESS_ROOT_MIMIC_CXR_JPG"
    only = resolve_data_root(None, environ=env, source_overrides={"nih14": world / "nih14"})
    assert only.data_source == "synthetic" and (only.path / MARKER).is_file()
    assert (only.path / "nih14" / "BBox_List_2017.csv").is_file() and only.source_present("mimic-cxr-jpg")
    assert not only.source_present("chexpert")
    real = tmp_path / "real"
    (real / "chexpert").mkdir(parents=True)
    with pytest.raises(DataError, match="mixed"):
        resolve_data_root(real, environ=env)
    with pytest.raises(DataError, match="unknown source"):
        resolve_data_root(world, environ={}, source_overrides={"padchest": world})


def test_default_root_is_generated_once_and_reused(tmp_path: Path) -> None:
    env = {"HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_SYNTH_SCALE": "0.02"}
    results: list[DataRoot] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_data_root(None, environ=env)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = results
    assert first.path == second.path and first.data_source == "synthetic"
    assert first.path.parent == tmp_path / "cache" / "synth" and first.path.name.endswith("-s0-x0.02")
    assert [p.name for p in first.path.parent.iterdir() if p.is_dir()] == [first.path.name]  # no temp left
    stamp = (first.path / MARKER).stat().st_mtime_ns
    again = resolve_data_root(None, environ=env)
    assert again.path == first.path and (first.path / MARKER).stat().st_mtime_ns == stamp


def test_default_world_grows_per_source_and_equals_a_one_shot_write(tmp_path: Path) -> None:
    env = {"HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_SYNTH_SCALE": "0.01"}
    first = resolve_data_root(None, environ=env, datasets=("nih14",))  # e.g. a first nih14-cls run
    marker = json.loads((first.path / MARKER).read_text())
    assert marker["sources"] == ["nih14"] and list(marker["counts"]) == ["nih14"]
    assert first.source_present("nih14") and not first.source_present("mimic-cxr")
    results: list[DataRoot] = []  # two concurrent first uses of MIMIC: written once, never half
    threads = [threading.Thread(target=lambda: results.append(resolve_data_root(None, environ=env,
                                                                                datasets=("mimic-cxr", "mock"))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.path for r in results] == [first.path, first.path] and results[0].source_present("mimic-cxr")
    assert sorted(p.name for p in first.path.parent.iterdir() if p.is_dir()) == [first.path.name]  # no temp left
    assert json.loads((first.path / MARKER).read_text())["sources"] == ["mimic", "nih14"]
    stamp = (first.path / MARKER).stat().st_mtime_ns
    assert resolve_data_root(None, environ=env, datasets=("nih14", "mimic-cxr")).path == first.path
    assert (first.path / MARKER).stat().st_mtime_ns == stamp  # nothing rewritten when nothing is missing
    resolve_data_root(None, environ=env, datasets=("openi",))
    once = write_world(tmp_path / "once", sources=("mimic", "nih14", "openi"), scale=0.01, seed=0, progress=False)
    assert json.loads((first.path / MARKER).read_text()) == once
    assert _file_bytes(first.path) == _file_bytes(tmp_path / "once")  # marker and ground truth included


def test_default_world_split_proportions() -> None:
    """The proportions that size the default world's evaluation sets (docs/datasets.md section 6.1), on the
    unit world's plan (no pixels): a quarter of MIMIC and NIH patients test, a tenth of MIMIC validation,
    CheXpert's valid set CHEXPERT_VALID_PATIENTS per unit of scale, NIH boxes on the test images."""
    from harness.synth.world import CHEXPERT_VALID_PATIENTS, SPLIT_FRACTIONS

    for source, fractions in SPLIT_FRACTIONS.items():
        world = build_source(source, scale=1.0, seed=0)
        split_of = {st.patient.index: st.split for st in world.studies}
        for split, fraction in fractions.items():
            share = np.mean([s == split for s in split_of.values()])
            assert abs(share - fraction) < 3 * np.sqrt(fraction * (1 - fraction) / len(split_of)), (source, split)
        assert np.mean([s == "train" for s in split_of.values()]) > 0.6  # the pretraining pool stays the largest
    chexpert = build_source("chexpert", scale=0.5, seed=0)
    assert sum(st.split == "valid" for st in chexpert.studies) == round(CHEXPERT_VALID_PATIENTS * 0.5)


ADAPTERS = ("mimic_cxr", "chexpert", "nih14", "openi")


@pytest.mark.parametrize("module", ADAPTERS)
def test_adapters_read_the_world(world: Path, module: str) -> None:
    if importlib.util.find_spec(f"harness.data.{module}") is None:
        pytest.skip(f"harness.data.{module} not present")
    adapter = importlib.import_module(f"harness.data.{module}").ADAPTER
    records = adapter.load(world, data_source="synthetic")
    records.validate()
    assert len(records.frame) > 0 and records.data_source == "synthetic"
    assert not records.problems, records.problems[:3]
