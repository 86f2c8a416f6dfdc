"""Hugging Face-format collections (``hf/<name>``) and ``harness export``, on tiny collections written for real.

The collections are written in the layouts ``datasets`` writes (``tests/hf_collection.py``: parquet
with the features in the schema metadata, a ``DatasetDict.save_to_disk`` folder), read into records,
scored end to end by a linear probe at the smoke profile through the CLI, and exported as parquet
that pandas (and ``datasets``, where installed) reads back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")

from harness.catalog import DATASETS  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.data.check import decode_images  # noqa: E402
from harness.data.hf_columns import read_column_map  # noqa: E402
from harness.storage import REPOSITORY  # noqa: E402
from harness.tasks import load_task  # noqa: E402
from tests.corpus import cli_error  # noqa: E402
from tests.hf_collection import (  # noqa: E402
    COLUMN_MAP,
    FEATURES,
    LABELS,
    data_root,
    rows,
    write_column_map,
)

EXAMPLES = REPOSITORY / "examples" / "hf"
TASK = "hf-my-cxr-cls"


def _load(root: Path, name: str = "tiny"):
    return DATASETS.get(f"hf/{name}").load(root)


def _by_study(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["image_id", "path"]).sort_values("study_id").reset_index(drop=True)


def test_parquet_collection_reads_into_records_as_its_columns_say(tmp_path):
    source = rows()
    root = data_root(tmp_path)
    recs = _load(root)
    frame = recs.frame.set_index("study_id")
    assert recs.dataset == "hf/tiny" and recs.label_names == LABELS and len(frame) == len(source["patient"])
    assert recs.skipped == {} and recs.warnings == {} and recs.problems == []
    for i, study in enumerate(source["study"]):
        row = frame.loc[study]
        assert row["patient_id"] == source["patient"][i]
        assert row["split"] == {"train": "train", "validation": "val", "test": "test"}[source["split"][i]]
        assert row["view"] == source["view"][i] and row["sex"] == ("F" if source["sex"][i] == "female" else "M")
        assert row["age"] == source["age"][i] and row["impression"] == source["impression"][i]
        for name, column in COLUMN_MAP["labels"].items():
            value = source[column][i]
            assert (math.isnan(row[name]) if value is None else row[name] == value), (study, name)
    # splits come from the parquet file names, and a split-leak message would name those files
    assert {k: Path(v).name for k, v in recs.split_files.items()} == {
        "train": "train-00000-of-00001.parquet", "val": "validation-00000-of-00001.parquet",
        "test": "test-00000-of-00001.parquet"}
    assert frame["image_id"].str.fullmatch(r"data/(train|validation|test)-00000-of-00001\.parquet#\d+").all()
    report = DATASETS.get("hf/tiny").check(root)
    decode_images(report, progress=False)
    assert report.ok and report.counts["images decoded"] == {"readable": 60, "unreadable": 0}
    assert report.labels == {n: int((recs.frame[n] == 1.0).sum()) for n in LABELS}


def test_save_to_disk_folder_gives_the_same_records_as_parquet(tmp_path):
    parquet = _load(data_root(tmp_path / "a"))
    arrow = _load(data_root(tmp_path / "b", layout="save_to_disk"))
    pd.testing.assert_frame_equal(_by_study(parquet.frame), _by_study(arrow.frame))
    assert arrow.frame["image_id"].str.fullmatch(r"(train|validation|test)/data-00000-of-00001\.arrow#\d+").all()
    assert parquet.fingerprint() != arrow.fingerprint()  # other ids: other data, never one leaderboard row
    # the pixels written into the cache are the collection's bytes, exactly
    first = arrow.frame.iloc[0]
    row = rows()["study"].index(first["study_id"])
    assert Path(first["path"]).read_bytes() == rows()["image"][row]["bytes"]


def test_images_are_written_once_and_a_damaged_cache_is_rebuilt(tmp_path, session_cache):
    root = data_root(tmp_path)
    paths = _load(root).frame["path"]
    stamps = {p: os.stat(p).st_mtime_ns for p in paths}
    assert all(str(session_cache / "hf-images") in p for p in paths)
    again = _load(root).frame["path"]
    assert list(again) == list(paths) and {p: os.stat(p).st_mtime_ns for p in again} == stamps
    index = Path(paths.iloc[0]).parent / "index.json"
    index.write_text("{not json")
    rebuilt = _load(root).frame["path"]
    assert list(rebuilt) == list(paths) and json.loads(index.read_text())["version"] == 1


def test_label_list_of_class_label_indices_or_separated_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["Atelectasis", "Effusion", "No Finding"]
    source = rows()
    listed = [[0, 1] if a == 1.0 else [2] for a in source["atelectasis"]]
    folder = tmp_path / "root" / "hf" / "nih-style"
    folder.mkdir(parents=True)
    features = {"image": {"_type": "Image"}, "patient": {"dtype": "string", "_type": "Value"},
                "labels": {"feature": {"names": names, "_type": "ClassLabel"}, "_type": "List"}}
    table = pa.table({"image": source["image"], "patient": source["patient"], "labels": listed})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    write_column_map(folder, {"image": "image", "patient_id": "patient", "label_list": {"column": "labels"}})
    recs = _load(tmp_path / "root", "nih-style")
    assert recs.label_names == tuple(names) and set(recs.frame["split"]) == {"train"}
    np.testing.assert_array_equal(recs.frame["Atelectasis"], source["atelectasis"])
    np.testing.assert_array_equal(recs.frame["Effusion"], source["atelectasis"])
    np.testing.assert_array_equal(recs.frame["No Finding"], 1.0 - np.array(source["atelectasis"]))
    # the same labels as one "A|B" string column, names given in the map
    strings = ["|".join(names[j] for j in row) for row in listed]
    pq.write_table(pa.table({"image": source["image"], "patient": source["patient"], "findings": strings}),
                   folder / "train-00000-of-00001.parquet")
    write_column_map(folder, {"image": "image", "patient_id": "patient",
                              "label_list": {"column": "findings", "names": names, "separator": "|"}})
    again = _load(tmp_path / "root", "nih-style")
    pd.testing.assert_frame_equal(again.frame[list(names)], recs.frame[list(names)])


def test_image_paths_relative_to_the_collection_and_a_missing_file_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = rows()
    folder = tmp_path / "root" / "hf" / "by-path"
    (folder / "images").mkdir(parents=True)
    files = []
    for i, image in enumerate(source["image"]):
        (folder / "images" / f"{i}.png").write_bytes(image["bytes"])
        files.append(f"images/{i}.png")
    (folder / "images" / "3.png").unlink()
    table = pa.table({"file": files, "patient": source["patient"], "split": source["split"],
                      "atelectasis": source["atelectasis"]})
    pq.write_table(table, folder / "collection.parquet")
    write_column_map(folder, {"image": "file", "patient_id": "patient", "split": "split",
                              "labels": {"Atelectasis": "atelectasis"}})
    recs = _load(tmp_path / "root", "by-path")
    assert recs.skipped == {"image file missing": 1} and len(recs.frame) == len(files) - 1
    assert set(recs.frame["path"]) == {str((folder / f).resolve()) for f in files if f != "images/3.png"}


def test_the_example_task_and_column_map_are_valid():
    from harness.tasks import task_files

    assert [p.name for p in task_files(EXAMPLES)] == [f"{TASK}.yaml"]  # --tasks-dir examples/hf: the task alone
    spec = load_task(EXAMPLES / f"{TASK}.yaml")
    assert spec.dataset == "hf/my-cxr" and spec.labels == ("Atelectasis", "Edema")
    cmap = read_column_map(EXAMPLES / "my-cxr" / "harness_columns.yaml")
    assert list(cmap.labels) == list(LABELS) and cmap.view_values == {"postero-anterior": "PA",
                                                                      "antero-posterior": "AP"}
    assert cmap.label_values == {1: 1.0, 0: 0.0, -1: -1.0, None: cmap.label_values[None]}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The example task scored on a tiny hf/my-cxr collection (random encoder, smoke profile, seeds 0 and 1)."""
    tmp = tmp_path_factory.mktemp("hf-run")
    root = data_root(tmp, name="my-cxr")
    shutil.copy(EXAMPLES / "my-cxr" / "harness_columns.yaml", root / "hf" / "my-cxr" / "harness_columns.yaml")
    tasks = tmp / "tasks"
    tasks.mkdir()
    shutil.copy(EXAMPLES / f"{TASK}.yaml", tasks)
    results = tmp / "results"
    codes = [main(["-q", "run", "--method", "random", "--task", TASK, "--tasks-dir", str(tasks), "--data-root",
                   str(root), "--profile", "smoke", "--results", str(results), "--seed", str(seed)])
             for seed in (0, 1)]
    return codes, root, results, tmp


@pytest.mark.slow
def test_a_linear_probe_task_runs_on_the_collection_end_to_end(scored, capsys):
    codes, root, results, _ = scored
    assert codes == [0, 0]
    recs = sorted((json.loads(p.read_text()) for p in results.rglob("*.json")), key=lambda r: r["seed"])
    assert [r["seed"] for r in recs] == [0, 1]
    for rec in recs:
        assert rec["dataset"] == "hf/my-cxr" and rec["data_source"] == "real" and rec["task"] == TASK
        assert 0.0 <= rec["metrics"]["auroc_macro"] <= 1.0 and rec["config"]["labels"] == ["Atelectasis", "Edema"]
        # the frontal views of the 60 images: 40, split by the collection's own train / validation / test files
        assert rec["n"]["train"] + rec["n"]["val"] + rec["n"]["test"] == 40
    assert main(["-q", "data", "check", "hf/my-cxr", "--root", str(root)]) == 0
    assert "hf/my-cxr: ok" in capsys.readouterr().out


@pytest.mark.slow
def test_export_round_trip_reads_back_identically(scored, capsys):
    from harness.reporting.export import leaderboard_frame, records_frame
    from harness.results import load_records

    _, _, results, tmp = scored
    out = tmp / "export"
    assert main(["-q", "export", "--results", str(results), "--out", str(out)]) == 0
    assert "2 parquet file(s)" in capsys.readouterr().out
    recs, problems = load_records(results)
    assert not problems and len(recs) == 2
    [records_file] = list((out / "real" / "results" / "random").glob("*/hf-my-cxr-cls.parquet"))
    back = pd.read_parquet(records_file)
    pd.testing.assert_frame_equal(back, records_frame(recs))
    for rec in recs:
        row = back[back["seed"] == rec["seed"]].iloc[0]
        assert row["metric.auroc_macro"] == rec["metrics"]["auroc_macro"]
        assert [row["ci_low.auroc_macro"], row["ci_high.auroc_macro"]] == rec["ci"]["auroc_macro"]
        assert row["weights_sha256"] == rec["weights_sha256"] and row["dataset"] == "hf/my-cxr"
    board = pd.read_parquet(out / "real" / "leaderboards" / "hf-my-cxr-cls.parquet")
    pd.testing.assert_frame_equal(board, leaderboard_frame(recs))
    [cell] = board.to_dict("records")
    values = [r["metrics"]["auroc_macro"] for r in recs]
    assert cell["row"] == "random" and cell["n_runs"] == 2 and cell["seeds"] == "0,1"
    assert cell["mean.auroc_macro"] == pytest.approx(np.mean(values))
    assert cell["std.auroc_macro"] == pytest.approx(np.std(values, ddof=1))
    readme = (out / "README.md").read_text()
    assert "config_name: real-hf-my-cxr-cls" in readme and "path: real/results/*/*/hf-my-cxr-cls.parquet" in readme
    # no identifier of the collection in the export: its patients, studies and file names
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"pat0" not in blob and b".parquet#" not in blob
    # a second export replaces the first whole; a folder that is not an export is refused in one line
    assert main(["-q", "export", "--results", str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".export")) == []
    other = tmp / "not-an-export"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    line = cli_error(["export", "--results", str(results), "--out", str(other)], capsys)
    assert str(other) in line and "not an earlier `harness export`" in line
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1


@pytest.mark.slow
def test_the_export_loads_with_datasets(scored, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, _, results, _ = scored
    out = tmp_path / "export"
    assert main(["-q", "export", "--results", str(results), "--out", str(out)]) == 0
    loaded = datasets.load_dataset("parquet", data_files=str(out / "real/results/*/*/hf-my-cxr-cls.parquet"),
                                   cache_dir=str(tmp_path / "hf-cache"))["train"]
    expected = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("real/results/*/*/*.parquet"))])
    pd.testing.assert_frame_equal(loaded.to_pandas(), expected.reset_index(drop=True))


def test_a_collection_written_by_datasets_itself_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa

    source = rows(n_patients=10)
    features = datasets.Features({k: datasets.Image() if k == "image" else datasets.Value(v["dtype"])
                                  for k, v in FEATURES.items()})
    table = pa.Table.from_pydict(features.encode_batch(source), schema=features.arrow_schema)
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint="tiny")
    folder = tmp_path / "root" / "hf" / "tiny"
    splits = {word: ds.select([i for i, w in enumerate(source["split"]) if w == word], new_fingerprint=f"tiny-{word}")
              for word in ("train", "validation", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    write_column_map(folder)
    recs = _load(tmp_path / "root")
    assert len(recs.frame) == 20 and set(recs.frame["split"]) == {"train", "val", "test"}
    assert sorted(recs.frame["study_id"]) == sorted(source["study"])


def test_a_collections_folder_given_by_override_is_found(tmp_path):
    from harness.data.roots import resolve_data_root
    from harness.data.sources import load_records

    elsewhere = data_root(tmp_path) / "hf"  # a folder of collections outside any data root
    root = resolve_data_root(None, environ={"HARNESS_ROOT_HF": str(elsewhere), "HARNESS_CACHE": str(tmp_path / "c")})
    assert root.data_source == "real" and root.source_present("hf/tiny") and not root.source_present("hf/other")
    assert len(load_records("hf/tiny", root).frame) == 60
