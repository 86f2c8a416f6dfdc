"""The bad-input corpus, data integrity: split leaks, label and view integrity, several candidate files,
damaged tables and ``harness data check``.

Every case damages a copy of the corpus world (``tests/corpus.py``, the session fixture ``corpus_world``:
the datasets' real layouts) the way real copies go wrong, and asserts what follows:

- a split that is not patient-disjoint (MIMIC's split.csv, CheXpert's train.csv vs valid.csv, NIH's two
  lists) is a problem of the records (``harness data check`` exit 2) and a run refuses it in one line
  naming the split file(s), the patient and the splits, unless the task says ``split: {on_leak: drop}``;
  pretraining rows that share a patient with the task's val or test split are refused the same way;
- label and view integrity (a study without a label row, contradictory No Finding, blank or unknown
  views, several files for one image) are counted per reason: ``Records.warnings`` for kept rows,
  ``Records.skipped`` / the cohort's ``skipped`` for removed ones, and the run record stores both;
- a truncated or corrupt table (gzip cut after its header, flipped bytes, not gzip at all, a plain CSV
  or list cut mid-row) is one ``DataError`` line naming the file;
- ``harness data check`` decodes every image and exits 2 on a problem, 0 only when the data is usable.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.catalog import DATASETS
from harness.cli import main
from harness.cohort import build_task_data, check_pretraining, training_data
from harness.data.mimic_cxr import ADAPTER as MIMIC
from harness.data.schema import DataError
from harness.data.tables import header
from harness.tasks import get_task
from tests.corpus import (
    CHEX,
    FOLDERS,
    LABELS,
    META,
    MIMIC_JPG,
    NIH_CSV,
    SPLIT,
    cli_error,
    copy_of,
    lines,
    load,
    one_line_error,
    set_cell,
    write,
)

RADIOLOGIST = "mimic-cxr-2.1.0-test-set-labeled.csv"
FRONTAL = ("PA", "AP")


@pytest.fixture(scope="module")
def world(corpus_world) -> Path:
    return corpus_world


@pytest.fixture(scope="module")
def baseline(world) -> dict[str, object]:
    """Each dataset's records on the undamaged world (the planted quirks already count)."""
    return {name: DATASETS.get(name).load(world, data_source="synthetic") for name in FOLDERS}


def tasks_dir(tmp: Path, **edits: str) -> Path:
    """Task files for the small world: nih14-cls with a larger validation carve-out (few NIH patients),
    and any ``task=old->new`` text edits asked for."""
    folder = tmp / "tasks"
    folder.mkdir(exist_ok=True)
    for name in ("nih14-cls", "mimic-cls", "chexpert-cls", "openi-cls"):
        text = Path(get_task(name).path).read_text()
        if name == "nih14-cls":
            text = text.replace("val_fraction: 0.1", "val_fraction: 0.4")
        for old, new in [e.split("->") for task, e in edits.items() if task.replace("_", "-") == name]:
            assert old in text, (name, old)
            text = text.replace(old, new)
        (folder / f"{name}.yaml").write_text(text)
    return folder


def cohort(root: Path, dataset: str, task: str, folder: Path | None = None):
    spec = get_task(task, folder or tasks_dir(root.parent))
    return build_task_data(spec, load(dataset, root), 16, progress=False)


def plus(base: dict[str, int], added: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for reason, n in added.items():
        out[reason] = out.get(reason, 0) + n
    return out


def frame_of(root: Path, dataset: str) -> pd.DataFrame:
    return load(dataset, root).frame


def csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = lines(path)
    return rows[0].split(","), [r.split(",") for r in rows[1:] if r]


def write_rows(path: Path, head: list[str], rows: list[list[str]]) -> None:
    write(path, [",".join(head), *(",".join(r) for r in rows), ""])


# ------------------------------------------------------------------------------------------ split integrity


def _mimic_patient_in_two_splits(root: Path) -> tuple[str, str, str]:
    """One frontal image of a train patient moved to test in split.csv (the rest of the patient stays)."""
    frame = frame_of(root, "mimic-cxr")
    counts = frame[frame["split"] == "train"].groupby("patient_id")["view"].apply(lambda v: v.isin(FRONTAL).sum())
    patient = counts[counts >= 2].index[0]
    image = frame[(frame["patient_id"] == patient) & frame["view"].isin(FRONTAL)]["image_id"].iloc[0]
    path = root / MIMIC_JPG / SPLIT
    head, rows = csv_rows(path)
    for r in rows:
        if r[0] == image:
            r[head.index("split")] = "test"
    write_rows(path, head, rows)
    return patient, re.escape(SPLIT), "train and test"


def _chexpert_patient_in_train_and_valid(root: Path) -> tuple[str, str, str]:
    """A train.csv row (and its JPG) filed under a valid.csv patient: the patient numbers overlap."""
    release = root / "chexpert" / CHEX
    valid = pd.read_csv(release / "valid.csv", dtype=str)
    patient = valid.loc[valid["AP/PA"].isin(FRONTAL), "Path"].iloc[0].split("/")[2]
    head, rows = csv_rows(release / "train.csv")
    row = next(r for r in rows if r[head.index("AP/PA")] in FRONTAL)
    old = row[0].split("/", 1)[1]  # train/patientNNNNN/studyK/viewK_frontal.jpg
    new = f"train/{patient}/study9/{old.rsplit('/', 1)[1]}"
    (release / new).parent.mkdir(parents=True)
    (release / old).rename(release / new)
    row[0] = f"{CHEX}/{new}"
    write_rows(release / "train.csv", head, rows)
    return patient, r"train\.csv \+ .*valid\.csv", "train and val"


def _nih_patient_in_both_lists(root: Path) -> tuple[str, str, str]:
    """One image of a multi-image train_val patient moved to test_list.txt."""
    frame = frame_of(root, "nih14")
    train = frame[(frame["split"] == "train") & frame["view"].isin(FRONTAL)]
    patient = train["patient_id"].value_counts().index[0]
    image = train.loc[train["patient_id"] == patient, "image_id"].iloc[0]
    folder = root / "nih14"
    listed = (folder / "train_val_list.txt").read_text().split()
    (folder / "train_val_list.txt").write_text("".join(f"{i}\n" for i in listed if i != image))
    (folder / "test_list.txt").write_text((folder / "test_list.txt").read_text() + f"{image}\n")
    return patient, r"train_val_list\.txt \+ .*test_list\.txt", "train and test"


LEAKS = {
    "mimic: patient in train and test of split.csv": ("mimic-cxr", "mimic-cls", _mimic_patient_in_two_splits),
    "chexpert: patient in train.csv and valid.csv": ("chexpert", "chexpert-cls", _chexpert_patient_in_train_and_valid),
    "nih14: patient in train_val_list and test_list": ("nih14", "nih14-cls", _nih_patient_in_both_lists),
}


@pytest.mark.parametrize("case", list(LEAKS))
def test_a_patient_in_two_splits_is_a_problem_and_the_cohort_refuses_it(case, world, tmp_path):
    dataset, task, damage = LEAKS[case]
    root = copy_of(world, tmp_path, dataset)
    patient, files, splits = damage(root)
    records = load(dataset, root)
    leak = [p for p in records.problems if "more than one split" in p]
    assert len(leak) == 1 and re.search(files, leak[0]), records.problems
    assert f"1 patient(s) in more than one split (first: patient {patient} in {splits})" in leak[0]
    n_images = int((records.frame["patient_id"] == patient).sum())
    assert records.warnings["image of a patient in more than one official split"] == n_images
    assert not DATASETS.get(dataset).check(root).ok  # `harness data check` fails on it
    with pytest.raises(DataError) as err:
        cohort(root, dataset, task)
    message = str(err.value)
    assert "\n" not in message and re.match(rf"\S*{files}: split: ", message), message
    assert f"split: {dataset} patient {patient} is in both {splits}" in message
    assert "set split: {on_leak: drop} in " in message and f"{task}.yaml" in message


@pytest.mark.parametrize("case", list(LEAKS))
def test_on_leak_drop_keeps_the_patient_only_in_its_most_held_out_split(case, world, tmp_path):
    dataset, task, damage = LEAKS[case]
    root = copy_of(world, tmp_path, dataset)
    patient, _, _ = damage(root)
    folder = tasks_dir(tmp_path, **{task: "split: {method: official->split: {on_leak: drop, method: official"})
    data = cohort(root, dataset, task, folder)
    where = {name: set(data.split(name).frame["patient_id"]) for name in ("train", "val", "test")}
    assert patient in where["test"] and patient not in where["train"] | where["val"]
    reason = f"{dataset}: patient in more than one split (row removed: kept in its most held-out split)"
    frame = load(dataset, root).frame
    used = frame[(frame["patient_id"] == patient) & frame["view"].isin(FRONTAL)]
    kept = int(sum((data.split(n).frame["patient_id"] == patient).sum() for n in ("train", "val", "test")))
    assert data.skipped[reason] == len(used) - kept >= 1


def test_cli_run_refuses_a_leak_and_data_check_exits_2(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "mimic-cxr")
    patient, _, _ = _mimic_patient_in_two_splits(root)
    line = cli_error(["run", "--method", "random", "--task", "mimic-cls", "--profile", "smoke", "--data-root",
                      str(root), "--results", str(tmp_path / "r")], capsys)
    assert re.match(rf"harness: error: .*{re.escape(SPLIT)}: split: mimic-cxr patient {patient} is in both train "
                    "and test", line), line
    assert not (tmp_path / "r").exists()
    assert main(["-q", "data", "check", "mimic-cxr", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "mimic-cxr: PROBLEMS" in out and f"first: patient {patient} in train and test" in out


def test_run_with_on_leak_drop_records_the_dropped_rows(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "mimic-cxr")
    _mimic_patient_in_two_splits(root)
    folder = tasks_dir(tmp_path, mimic_cls="split: {method: official->split: {on_leak: drop, method: official")
    assert main(["-q", "run", "--method", "random", "--task", "mimic-cls", "--profile", "smoke", "--data-root",
                 str(root), "--results", str(tmp_path / "r"), "--tasks-dir", str(folder)]) == 0
    record = json.loads(next((tmp_path / "r").rglob("*.json")).read_text())
    dropped = "mimic-cxr: patient in more than one split (row removed: kept in its most held-out split)"
    assert record["skipped"][dropped] >= 1
    assert record["warnings"]["mimic-cxr: image of a patient in more than one official split"] >= 2
    assert record["config"]["split"]["on_leak"] == "drop"
    out = capsys.readouterr().out
    assert f"  skipped {record['skipped'][dropped]}: {dropped}" in out
    assert "  warning 1: mimic-cxr: ViewPosition blank" in out  # the planted blank view, a warning too


def test_nih_image_in_both_lists_is_an_error(world, tmp_path):
    root = copy_of(world, tmp_path, "nih14")
    image = (root / "nih14" / "train_val_list.txt").read_text().split()[0]
    (root / "nih14" / "test_list.txt").write_text((root / "nih14" / "test_list.txt").read_text() + f"{image}\n")
    message = one_line_error("nih14", root)
    assert re.search(rf"test_list\.txt: {re.escape(image)} is also in train_val_list\.txt", message), message


def test_pretraining_rows_that_hold_an_evaluation_patient_are_refused(world, tmp_path, capsys):
    """mlm-mvm mixes in the text of another cohort's training split (``load_source``). A MIMIC lateral
    without a split row makes that cohort fall back to a patient-hash split, whose training patients
    include the task's official val/test patients: refused before any training."""
    root = copy_of(world, tmp_path, "mimic-cxr")
    frame = frame_of(root, "mimic-cxr")
    lateral = frame.loc[frame["view"] == "LATERAL", "image_id"].iloc[0]
    path = root / MIMIC_JPG / SPLIT
    write(path, [r for r in lines(path) if not r.startswith(lateral)])
    line = cli_error(["-q", "run", "--method", "mlm-mvm", "--task", "mimic-cls", "--profile", "smoke",
                      "--set", "mixing=cross-source unpaired", "--set", "text_source=mimic-cxr",
                      "--data-root", str(root), "--results", str(tmp_path / "r")], capsys)
    assert re.match(r"harness: error: pretraining data \(the training split of mimic-cxr\) shares mimic-cxr patient "
                    r"\d{8} with the (val|test) split of task mimic-cls \(\d+ patient\(s\) in both", line), line
    assert not (tmp_path / "r").exists()


def test_check_pretraining_names_dataset_patient_and_split(world, tmp_path):
    root = copy_of(world, tmp_path, "nih14")
    data = cohort(root, "nih14", "nih14-cls")
    own = training_data(data)
    assert check_pretraining(own, data, "own") is own  # the task's own training split passes
    for split in ("val", "test"):
        held_out = data.split(split).frame
        patient = held_out["patient_id"].iloc[0]
        leaky = dataclasses.replace(own, frame=pd.concat([own.frame, held_out.iloc[:1]], ignore_index=True))
        with pytest.raises(DataError) as err:
            check_pretraining(leaky, data, "--pretrain-on nih14")
        assert str(err.value) == (f"pretraining data (--pretrain-on nih14) shares nih14 patient {patient} with the "
                                  f"{split} split of task nih14-cls (1 patient(s) in both the pretraining rows and "
                                  f"{split}): a method must never pretrain on the patients it is evaluated on")
    other = dataclasses.replace(own, frame=own.frame.assign(dataset="openi"))  # same ids, another dataset
    assert check_pretraining(other, data, "openi") is other


def test_on_leak_must_be_error_or_drop(tmp_path, capsys):
    folder = tasks_dir(tmp_path, mimic_cls="split: {method: official->split: {on_leak: ignore, method: official")
    assert main(["validate", str(folder / "mimic-cls.yaml")]) == 1
    assert "split.on_leak: 'ignore' is not 'error' or 'drop'" in capsys.readouterr().out
    line = cli_error(["run", "--method", "random", "--task", "mimic-cls", "--tasks-dir", str(folder)], capsys)
    assert line.endswith("mimic-cls.yaml: split.on_leak: 'ignore' is not 'error' or 'drop'"), line


# ------------------------------------------------------------------------------------------ label / view / files


def _study_with_frontal(frame: pd.DataFrame, split: str | None = None) -> str:
    f = frame if split is None else frame[frame["split"] == split]
    return str(f.loc[f["view"].isin(FRONTAL), "study_id"].iloc[0])


def _mimic_no_label_row(root: Path) -> dict:
    frame = frame_of(root, "mimic-cxr")
    study = _study_with_frontal(frame[frame["labelled"]])
    path = root / MIMIC_JPG / LABELS
    write(path, [r for r in lines(path) if f",{study}," not in r])
    of_study = frame[frame["study_id"] == study]
    return {"warnings": {"study has no label row (labels blank; labelled tasks remove the image)": len(of_study)},
            "cohort": ("mimic-cls", {"mimic-cxr: no label row for the study (row removed: labelled task)":
                                     int(of_study["view"].isin(FRONTAL).sum())}),
            "check": lambda f: f.loc[f["study_id"] == study, "labelled"].eq(False).all()
            and f.loc[f["study_id"] == study, list(MIMIC.label_names)].isna().all().all()}


def _mimic_label_row_without_image(root: Path) -> dict:
    path = root / MIMIC_JPG / LABELS
    rows = lines(path)
    rows.insert(2, "19999999,59999999" + ",1.0" * 14)
    write(path, rows)
    return {"skipped": {"label row of a study without images": 1}}


def _mimic_contradictory(root: Path) -> dict:
    path = root / MIMIC_JPG / LABELS
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("No Finding")] == "")
    study = rows[i][1]
    set_cell(path, i, "No Finding", "1.0")
    set_cell(path, i, "Edema", "1.0")
    n = int((frame_of(root, "mimic-cxr")["study_id"] == study).sum())
    return {"warnings": {"No Finding together with a positive finding (labels kept as in the file)": n},
            "check": lambda f: (f.loc[f["study_id"] == study, ["No Finding", "Edema"]] == 1.0).all().all()}


def _mimic_blank_view(root: Path) -> dict:
    path = root / MIMIC_JPG / META
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("ViewPosition")] == "PA")
    set_cell(path, i, "ViewPosition", "")
    return {"warnings": {"ViewPosition blank": 1},
            "cohort": ("mimic-cls", {"mimic-cxr: view blank or unknown (not in the task's views)": 1})}


def _mimic_unknown_view(root: Path) -> dict:
    path = root / MIMIC_JPG / META
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("ViewPosition")] == "AP")
    set_cell(path, i, "ViewPosition", "AP SUPINE")
    return {"warnings": {"ViewPosition not a known value": 1}, "unknown_views": ("AP SUPINE",),
            "cohort": ("mimic-cls", {"mimic-cxr: view blank or unknown (not in the task's views)": 1})}


def _mimic_jpg_in_two_versions(root: Path) -> dict:
    """MIMIC-CXR-JPG 2.1.0 next to a partial 2.0.0 download: one JPG in both; the 2.1.0 file is read."""
    jpg = root / MIMIC_JPG
    version = jpg / "2.1.0"
    version.mkdir()
    for item in list(jpg.iterdir()):
        if item != version:
            item.rename(version / item.name)
    first = sorted((version / "files").rglob("*.jpg"))[0]
    relative = first.relative_to(version)
    (jpg / "2.0.0" / relative).parent.mkdir(parents=True)
    shutil.copy(first, jpg / "2.0.0" / relative)
    return {"warnings": {"JPG also in another MIMIC-CXR-JPG version folder (the chosen version's file is used)": 1},
            "check": lambda f: f["path"].str.contains("/2.1.0/files/").all()}


def _chexpert_contradictory(root: Path) -> dict:
    path = root / "chexpert" / CHEX / "train.csv"
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("No Finding")] == "1.0")
    set_cell(path, i, "Cardiomegaly", "1.0")
    return {"warnings": {"No Finding together with a positive finding (labels kept as in the file)": 1}}


def _chexpert_blank_ap_pa(root: Path) -> dict:
    path = root / "chexpert" / CHEX / "train.csv"
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("AP/PA")] in FRONTAL)
    set_cell(path, i, "AP/PA", "")
    image = rows[i][0].split("/", 1)[1]
    return {"warnings": {"AP/PA blank on a Frontal image (view FRONTAL)": 1},
            "cohort": ("chexpert-cls", {"chexpert: view blank or unknown (not in the task's views)": 1}),
            "check": lambda f: f.loc[f["image_id"] == image, "view"].eq("FRONTAL").all()}


def _chexpert_ap_pa_on_lateral(root: Path) -> dict:
    path = root / "chexpert" / CHEX / "train.csv"
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[head.index("Frontal/Lateral")] == "Lateral")
    set_cell(path, i, "AP/PA", "AP")
    image = rows[i][0].split("/", 1)[1]
    return {"warnings": {"AP/PA given on a Lateral image (view LATERAL: Frontal/Lateral wins)": 1},
            "check": lambda f: f.loc[f["image_id"] == image, "view"].eq("LATERAL").all()}


def _chexpert_both_releases(root: Path) -> dict:
    shutil.copytree(root / "chexpert" / CHEX, root / "chexpert" / "CheXpert-v1.0")
    n = len(frame_of(root, "chexpert"))
    return {"warnings": {"image in several CheXpert releases (CheXpert-v1.0-small used)": n},
            "check": lambda f: f["path"].str.contains(f"/{CHEX}/").all()}


def _nih_contradictory(root: Path) -> dict:
    path = root / "nih14" / NIH_CSV
    head, rows = csv_rows(path)
    i = next(k for k, r in enumerate(rows) if r[1] == "No Finding")
    set_cell(path, i, "Finding Labels", "No Finding|Effusion")
    image = rows[i][0]
    return {"warnings": {"No Finding together with a positive finding (labels kept as in the file)": 1},
            "check": lambda f: (f.loc[f["image_id"] == image, ["No Finding", "Effusion"]] == 1.0).all().all()}


def _nih_view(value: str, reason: str):
    def damage(root: Path) -> dict:
        path = root / "nih14" / NIH_CSV
        rows = lines(path)
        i = next(k for k, r in enumerate(rows[1:]) if ",PA," in r)
        rows[i + 1] = rows[i + 1].replace(",PA,", f",{value},", 1)
        write(path, rows)
        return {"warnings": {reason: 1}, "unknown_views": (value,) if value else (),
                "cohort": ("nih14-cls", {"nih14: view blank or unknown (not in the task's views)": 1})}
    return damage


def _nih_png_in_two_folders(root: Path) -> dict:
    first = sorted((root / "nih14" / "images_001" / "images").glob("*.png"))[0]
    (root / "nih14" / "images_002" / "images").mkdir(parents=True)
    shutil.copy(first, root / "nih14" / "images_002" / "images" / first.name)
    return {"warnings": {"PNG in several image folders (the first in sorted path order is used)": 1},
            "check": lambda f: f.loc[f["image_id"] == first.name, "path"].eq(str(first.resolve())).all()}


def _nih_list_entry_not_in_label_file(root: Path) -> dict:
    path = root / "nih14" / "test_list.txt"
    path.write_text(path.read_text() + "00099999_000.png\n")
    return {"skipped": {"split-list entry not in the label file": 1}}


def _openi_png_in_two_folders(root: Path) -> dict:
    first = sorted((root / "openi" / "NLMCXR_png").glob("*.png"))[0]
    (root / "openi" / "extra").mkdir()
    shutil.copy(first, root / "openi" / "extra" / first.name)
    return {"warnings": {"several PNGs for one image id (<id>.png, then the first in sorted path order, is used)": 1},
            "check": lambda f: f.loc[f["image_id"] == first.stem, "path"].eq(str(first.resolve())).all()}


def _openi_kaggle_copy_too(root: Path) -> dict:
    first = sorted((root / "openi" / "NLMCXR_png").glob("*.png"))[0]
    kaggle = root / "openi" / "images" / "images_normalized" / f"{first.stem[3:]}.dcm.png"
    kaggle.parent.mkdir(parents=True)
    shutil.copy(first, kaggle)
    return {"warnings": {"several PNGs for one image id (<id>.png, then the first in sorted path order, is used)": 1},
            "check": lambda f: f.loc[f["image_id"] == first.stem, "path"].eq(str(first.resolve())).all()}


def _openi_projection_missing(root: Path) -> dict:
    frame = frame_of(root, "openi")
    rows = [f"{r.study_id},{r.image_id[3:]}.dcm.png,{'Frontal' if k % 2 else 'Lateral'}"
            for k, r in enumerate(frame.iloc[1:].itertuples())]
    (root / "openi" / "indiana_projections.csv").write_text("\n".join(["uid,filename,projection", *rows]) + "\n")
    return {"warnings": {"image without a row in indiana_projections.csv (view blank)": 1}}


def _mimic_metadata_row_missing(root: Path) -> dict:
    """A metadata table with a row missing: 2.1.0's IMAGE_FILENAMES still lists that JPG."""
    path = root / MIMIC_JPG / META
    rows = lines(path)
    write(path, rows[:3] + rows[4:])
    return {"skipped": {"image in IMAGE_FILENAMES without a metadata row (not loaded)": 1}, "removed": 1}


def _chexpert_csv_row_missing(root: Path) -> dict:
    path = root / "chexpert" / CHEX / "train.csv"
    rows = lines(path)
    write(path, rows[:2] + rows[3:])
    return {"skipped": {"JPG under train/ or valid/ without a row in train.csv / valid.csv (not loaded)": 1},
            "removed": 1}


def _nih_label_row_missing(root: Path) -> dict:
    path = root / "nih14" / NIH_CSV
    rows = lines(path)
    write(path, rows[:4] + rows[5:])
    return {"skipped": {"PNG without a row in the label file (not loaded)": 1,
                        "split-list entry not in the label file": 1}, "removed": 1}


def _openi_parent_image_missing(root: Path) -> dict:
    """An XML that lost one of its two parentImage elements (a damaged report file): its PNG is orphaned."""
    for xml in sorted((root / "openi" / "ecgen-radiology").glob("*.xml")):
        text = xml.read_text()
        if text.count("<parentImage ") >= 2:
            start = text.index("<parentImage ")
            xml.write_text(text[:start] + text[text.index("</parentImage>", start) + len("</parentImage>"):])
            break
    return {"skipped": {"PNG of no report's image (not loaded)": 1}, "removed": 1}


COUNTED = {
    "mimic: metadata row missing": ("mimic-cxr", _mimic_metadata_row_missing),
    "chexpert: train.csv row missing": ("chexpert", _chexpert_csv_row_missing),
    "nih14: label-file row missing": ("nih14", _nih_label_row_missing),
    "openi: parentImage missing from a report": ("openi", _openi_parent_image_missing),
    "mimic: study without a label row": ("mimic-cxr", _mimic_no_label_row),
    "mimic: label row of a study without images": ("mimic-cxr", _mimic_label_row_without_image),
    "mimic: No Finding with a positive finding": ("mimic-cxr", _mimic_contradictory),
    "mimic: blank ViewPosition on a frontal": ("mimic-cxr", _mimic_blank_view),
    "mimic: unknown ViewPosition": ("mimic-cxr", _mimic_unknown_view),
    "mimic: JPG in two version folders": ("mimic-cxr", _mimic_jpg_in_two_versions),
    "chexpert: No Finding with a positive finding": ("chexpert", _chexpert_contradictory),
    "chexpert: blank AP/PA on a frontal": ("chexpert", _chexpert_blank_ap_pa),
    "chexpert: AP/PA on a lateral": ("chexpert", _chexpert_ap_pa_on_lateral),
    "chexpert: both releases": ("chexpert", _chexpert_both_releases),
    "nih14: No Finding listed with a finding": ("nih14", _nih_contradictory),
    "nih14: blank View Position": ("nih14", _nih_view("", "View Position blank")),
    "nih14: View Position LL": ("nih14", _nih_view("LL", "View Position not PA or AP")),
    "nih14: PNG in two image folders": ("nih14", _nih_png_in_two_folders),
    "nih14: split-list entry not in the label file": ("nih14", _nih_list_entry_not_in_label_file),
    "openi: PNG in two folders": ("openi", _openi_png_in_two_folders),
    "openi: NLMCXR and Kaggle copies of one image": ("openi", _openi_kaggle_copy_too),
    "openi: image without a projection row": ("openi", _openi_projection_missing),
}


@pytest.mark.parametrize("case", list(COUNTED))
def test_label_view_and_file_integrity_is_counted_per_reason(case, world, tmp_path, baseline):
    dataset, damage = COUNTED[case]
    root = copy_of(world, tmp_path, dataset)
    base = baseline[dataset]
    n_before = len(base.frame)
    expected = damage(root)
    records = load(dataset, root)
    assert records.warnings == plus(base.warnings, expected.get("warnings", {}))
    assert records.skipped == plus(base.skipped, expected.get("skipped", {}))
    assert len(records.frame) == n_before - expected.get("removed", 0)  # the rest keep every image
    assert records.problems == base.problems  # a warning is not a problem: data check still passes
    if "unknown_views" in expected:
        assert set(expected["unknown_views"]) <= set(records.unknown_views)
    if "check" in expected:
        assert expected["check"](records.frame)
    if "cohort" in expected:
        task, added = expected["cohort"]
        (tmp_path / "clean").mkdir()
        before = cohort(copy_of(world, tmp_path / "clean", dataset), dataset, task)
        after = cohort(root, dataset, task)
        assert after.skipped == plus(before.skipped, added)
        n = sum(len(after.split(s)) for s in ("train", "val", "test"))
        assert n == sum(len(before.split(s)) for s in ("train", "val", "test")) - sum(added.values())
        assert after.warnings == {f"{dataset}: {k}": v for k, v in records.warnings.items()}


def test_radiologist_test_labels_missing_a_study_are_not_all_negative(world, tmp_path):
    root = copy_of(world, tmp_path, "mimic-cxr")
    path = root / MIMIC_JPG / RADIOLOGIST
    head, rows = csv_rows(path)
    study = rows[0][0]
    write_rows(path, head, rows[1:])
    records = MIMIC.load(root, data_source="synthetic", test_labels="radiologist")
    of_study = records.frame[records.frame["study_id"] == study]
    reason = "test study has no radiologist label row (labels blank; labelled tasks remove the image)"
    assert records.warnings[reason] == len(of_study) >= 1
    assert not of_study["labelled"].any() and of_study[list(MIMIC.label_names)].isna().all().all()
    data = build_task_data(get_task("mimic-cls"), records, 16, progress=False)
    assert study not in set(data.test.frame["study_id"])
    assert data.skipped["mimic-cxr: no label row for the study (row removed: labelled task)"] >= int(
        of_study["view"].isin(FRONTAL).sum())


def test_unlabelled_tasks_keep_images_without_a_label_row(world, tmp_path, baseline):
    root = copy_of(world, tmp_path, "mimic-cxr")
    frame = baseline["mimic-cxr"].frame
    unlabelled = frame[~frame["labelled"] & frame["view"].isin(FRONTAL)]
    assert len(unlabelled) >= 1  # the world plants a study without a label row
    data = build_task_data(get_task("mimic-retrieval"), load("mimic-cxr", root), 16, progress=False)
    kept = set().union(*(set(data.split(s).frame["image_id"]) for s in ("train", "val", "test")))
    assert set(unlabelled["image_id"]) <= kept
    assert not any("no label row" in reason for reason in data.skipped)


def test_run_record_stores_label_and_view_counts(world, tmp_path, capsys, baseline):
    root = copy_of(world, tmp_path, "mimic-cxr")
    removed = "mimic-cxr: no label row for the study (row removed: labelled task)"
    n_removed = _mimic_no_label_row(root)["cohort"][1][removed]
    frame = frame_of(root, "mimic-cxr")
    pa = frame[(frame["view"] == "PA") & frame["labelled"]]["image_id"].iloc[0]  # another study than the one above
    path = root / MIMIC_JPG / META
    head, rows = csv_rows(path)
    set_cell(path, next(k for k, r in enumerate(rows) if r[0] == pa), "ViewPosition", "")
    expected = build_task_data(get_task("mimic-cls"), load("mimic-cxr", root), 16, progress=False)
    assert main(["-q", "run", "--method", "random", "--task", "mimic-cls", "--profile", "smoke", "--data-root",
                 str(root), "--results", str(tmp_path / "r")]) == 0
    record = json.loads(next((tmp_path / "r").rglob("*.json")).read_text())
    assert record["skipped"] == expected.skipped and record["warnings"] == expected.warnings
    base = baseline["mimic-cxr"].frame
    planted = int((~base["labelled"] & base["view"].isin(FRONTAL)).sum())  # the world's study without a label row
    assert record["skipped"][removed] == n_removed + planted
    assert record["skipped"]["mimic-cxr: view blank or unknown (not in the task's views)"] >= 1
    assert record["warnings"]["mimic-cxr: ViewPosition blank"] == 2  # the planted one and ours
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    n_skipped = len(record["skipped"])
    assert sorted(summary[:n_skipped]) == sorted(f"  skipped {n}: {r}" for r, n in record["skipped"].items())
    assert sorted(summary[n_skipped:]) == sorted(f"  warning {n}: {r}" for r, n in record["warnings"].items())


def test_dispatched_runs_print_their_warnings_after_skipped(tmp_path):
    from harness.dispatch import outcomes
    from harness.dispatch.runner import RunRequest
    from tests.test_results import make_record

    path = tmp_path / "rec.json"
    path.write_text(json.dumps(make_record(0, skipped={"nih14: impossible age": 2},
                                           warnings={"nih14: View Position blank": 3})))
    out = outcomes.describe([outcomes.JobOutcome(RunRequest(method="random", task="nih14-cls"), "done",
                                                 record_path=path)]).splitlines()
    assert out[1:] == ["  skipped 2: nih14: impossible age", "  warning 3: nih14: View Position blank"]


# ------------------------------------------------------------------------------------------ damaged tables


def _big_gzip_cut(path: Path, factor: int = 400) -> None:
    """Grow a table to a few MB (rows repeated, ids made unique) and cut its gzip in the middle: the header
    decompresses, the error comes from the middle of the file, as with a large download that stopped."""
    rows = [r for r in lines(path) if r]
    body = [f"{k:07d}{row}" for k in range(factor) for row in rows[1:]]
    data = gzip.compress(("\n".join([rows[0], *body]) + "\n").encode(), compresslevel=1)
    path.write_bytes(data[: len(data) // 2])
    assert header(path)[0] == rows[0].split(",")[0]  # the header survives the cut


def _gzip_truncated_after_header(root: Path) -> str:
    path = root / MIMIC_JPG / META
    _big_gzip_cut(path)
    return rf"{re.escape(META)}: truncated or corrupt gzip file \(EOFError: Compressed file ended"


def _gzip_flipped_bytes(root: Path) -> str:
    path = root / MIMIC_JPG / LABELS
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = b"\x00" * 8
    path.write_bytes(bytes(data))
    return rf"{re.escape(LABELS)}: truncated or corrupt gzip file \((error|BadGzipFile|EOFError): "


def _gzip_crc(root: Path) -> str:
    path = root / MIMIC_JPG / SPLIT
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the CRC-32 of the trailer: every byte decompresses, the check fails at the end
    path.write_bytes(bytes(data))
    return rf"{re.escape(SPLIT)}: truncated or corrupt gzip file \(BadGzipFile: CRC check failed"


def _mimiciv_admissions_cut(root: Path) -> str:
    path = next((root / "mimiciv").rglob("admissions.csv.gz"))
    _big_gzip_cut(path, factor=300)
    return r"admissions\.csv\.gz: truncated or corrupt gzip file \(EOFError"


def _mimiciv_patients_not_gzip(root: Path) -> str:
    path = next((root / "mimiciv").rglob("patients.csv.gz"))
    path.write_bytes(gzip.decompress(path.read_bytes()))  # gunzipped in place, the name kept
    return r"patients\.csv\.gz: truncated or corrupt gzip file \(BadGzipFile: Not a gzipped file"


def _mimiciv_icustays_empty_gzip(root: Path) -> str:
    path = next((root / "mimiciv").rglob("icustays.csv.gz"))
    path.write_bytes(path.read_bytes()[:12])  # the gzip header only
    return r"icustays\.csv\.gz: truncated or corrupt gzip file \(EOFError"


def _mimic_radiologist_plain_cut(root: Path) -> str:
    path = root / MIMIC_JPG / RADIOLOGIST
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rindex(",", 0, len(text) - 10)])
    n = len(text.splitlines())
    return rf"{re.escape(RADIOLOGIST)}:{n}: row: \d+ fields, expected 15: the file ends"


def _mimic_plain_metadata_cut(root: Path) -> str:
    gz = root / MIMIC_JPG / META
    plain = gz.with_suffix("")  # the un-gzipped copy users keep
    text = gzip.decompress(gz.read_bytes()).decode().rstrip("\n")
    gz.unlink()
    plain.write_text(text[: text.rindex(",", 0, len(text) - 20)])
    n = len(text.splitlines())
    return rf"mimic-cxr-2\.0\.0-metadata\.csv:{n}: row: \d+ fields, expected 12: the file ends"


def _nih_gzip_cut(root: Path) -> str:
    folder = root / "nih14"
    plain = folder / NIH_CSV
    gz = folder / f"{NIH_CSV}.gz"
    text = plain.read_text().splitlines()
    body = [f"{row}" for row in text[1:]] * 200  # repeated rows: the cut comes long before any duplicate check
    data = gzip.compress(("\n".join([text[0], *body]) + "\n").encode(), compresslevel=1)
    plain.unlink()
    (folder / "Data_Entry_2017.csv").unlink()
    gz.write_bytes(data[: len(data) // 2])
    return rf"{re.escape(NIH_CSV)}\.gz: truncated or corrupt gzip file \(EOFError"


def _nih_plain_cut_mid_row(root: Path) -> str:
    path = root / "nih14" / NIH_CSV
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rindex(",", 0, len(text) - 12)])
    return rf"{re.escape(NIH_CSV)}:{len(text.splitlines())}: row: \d+ fields, expected 11"


def _nih_list_cut(root: Path) -> str:
    path = root / "nih14" / "test_list.txt"
    text = path.read_text().rstrip("\n")
    path.write_text(text[:-6])
    n = len(text.splitlines())
    return rf"test_list\.txt:{n}: image: '\d{{8}}_\d?' is not an image file name"


def _chexpert_cut_mid_row(root: Path) -> str:
    path = root / "chexpert" / CHEX / "train.csv"
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rindex(",", 0, len(text) - 10)])
    n = len(text.splitlines())
    return rf"train\.csv:{n}: row: \d+ fields, expected 19: the file ends in the middle of a row"


def _openi_projections_cut(root: Path) -> str:
    frame = frame_of(root, "openi")
    rows = [f"{r.study_id},{r.image_id[3:]}.dcm.png,Frontal" for r in frame.itertuples()]
    text = "\n".join(["uid,filename,projection", *rows])
    (root / "openi" / "indiana_projections.csv").write_text(text[: text.rindex(",")])
    return rf"indiana_projections\.csv:{len(rows) + 1}: row: 2 fields, expected 3"


TABLES = {
    "mimic: metadata.csv.gz cut after its header": ("mimic-cxr", _gzip_truncated_after_header),
    "mimic: chexpert.csv.gz with zeroed bytes": ("mimic-cxr", _gzip_flipped_bytes),
    "mimic: split.csv.gz with a bad CRC": ("mimic-cxr", _gzip_crc),
    "mimic: plain metadata.csv cut mid-row": ("mimic-cxr", _mimic_plain_metadata_cut),
    "mimic: radiologist csv cut mid-row": ("mimic-cxr", _mimic_radiologist_plain_cut),
    "mimic-iv: admissions.csv.gz cut after its header": ("mimic-cxr", _mimiciv_admissions_cut),
    "mimic-iv: patients.csv.gz that is not gzip": ("mimic-cxr", _mimiciv_patients_not_gzip),
    "mimic-iv: icustays.csv.gz of a gzip header only": ("mimic-cxr", _mimiciv_icustays_empty_gzip),
    "nih14: Data_Entry csv.gz cut after its header": ("nih14", _nih_gzip_cut),
    "nih14: Data_Entry csv cut mid-row": ("nih14", _nih_plain_cut_mid_row),
    "nih14: test_list.txt cut mid-line": ("nih14", _nih_list_cut),
    "chexpert: train.csv cut mid-row": ("chexpert", _chexpert_cut_mid_row),
    "openi: indiana_projections.csv cut mid-row": ("openi", _openi_projections_cut),
}


@pytest.mark.parametrize("case", list(TABLES))
def test_truncated_or_corrupt_table_is_one_line_naming_the_file(case, world, tmp_path, capsys):
    dataset, damage = TABLES[case]
    root = copy_of(world, tmp_path, dataset)
    expected = damage(root)
    if case == "mimic: radiologist csv cut mid-row":  # read only for test_labels="radiologist"
        with pytest.raises(DataError) as err:
            MIMIC.load(root, data_source="synthetic", test_labels="radiologist")
        message = str(err.value)
        assert "\n" not in message
    else:
        message = one_line_error(dataset, root)
        report = DATASETS.get(dataset).check(root)  # `harness data check` fails with the same line
        assert not report.ok and any(re.search(expected, p) for p in report.problems), report.problems
    assert re.search(expected, message), (expected, message)
    if case == "mimic-iv: admissions.csv.gz cut after its header":  # through a run too: one line, exit 2
        line = cli_error(["run", "--method", "random", "--task", "mimic-cls", "--profile", "smoke", "--data-root",
                          str(root), "--results", str(tmp_path / "r")], capsys)
        assert re.search(expected, line), line


# ------------------------------------------------------------------------------------------ harness data check


def test_data_check_decodes_every_image_and_names_the_unreadable(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "nih14")
    frame = frame_of(root, "nih14")
    bad = [Path(p) for p in frame["path"].iloc[[2, 5]]]
    bad[0].write_bytes(bad[0].read_bytes()[:200])  # truncated PNG
    bad[1].write_bytes(b"")  # zero bytes
    assert main(["-q", "data", "check", "nih14", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "nih14: PROBLEMS" in out
    assert f"  problem: 2 of {len(frame)} image(s) cannot be decoded" in out
    assert f"  images decoded: readable={len(frame) - 2}, unreadable=2" in out
    assert f"  problem: unreadable image: {bad[1]}: file is empty (0 bytes)" in out
    assert f"  problem: unreadable image: {bad[0]}: " in out


@pytest.mark.parametrize("dataset", list(FOLDERS))
def test_data_check_is_0_on_usable_data_and_prints_skips_and_warnings(dataset, world, capsys, baseline):
    assert main(["-q", "data", "check", dataset, "--root", str(world)]) == 0
    out = capsys.readouterr().out
    records = baseline[dataset]
    assert f"{dataset}: ok" in out and f"  images decoded: readable={len(records.frame)}, unreadable=0" in out
    for reason, n in records.skipped.items():
        assert f"  skipped {n}: {reason}" in out
    for reason, n in records.warnings.items():
        assert f"  warning {n}: {reason}" in out


def test_data_check_of_an_absent_dataset_exits_2(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "openi")
    assert main(["-q", "data", "check", "chexpert", "--root", str(root)]) == 2
    assert "chexpert: NOT FOUND" in capsys.readouterr().out


def test_data_check_decodes_in_worker_processes_too(world, tmp_path):
    from harness.data.check import decode_images

    root = copy_of(world, tmp_path, "openi")
    first = Path(frame_of(root, "openi")["path"].iloc[0])
    first.write_bytes(b"<html>not a png</html>")
    report = DATASETS.get("openi").check(root)
    decode_images(report, workers=2, progress=False)
    assert report.counts["images decoded"]["unreadable"] == 1
    assert any(p.startswith(f"unreadable image: {first}: UnidentifiedImageError") for p in report.problems)
    assert np.sum([p.startswith("unreadable image: ") for p in report.problems]) == 1
