"""The bad-input corpus, Hugging Face-format collections (``hf/<name>``): damaged column maps, data files and rows.

Every case writes a tiny collection for real (``tests/hf_collection.py``, the layouts ``datasets``
writes), damages it the way real copies and hand-written column maps go wrong, and asserts what
follows: one ``DataError`` line naming the file, the row and the column (through the CLI: exit 2,
one ``harness: error:`` line, no traceback), or a counted skip that the records, the run summary
and the result record carry.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.catalog import DATASETS
from harness.cli import main
from harness.data.hf_images import NO_IMAGE
from harness.data.schema import DataError
from harness.storage import REPOSITORY
from tests.corpus import cli_error
from tests.hf_collection import COLUMN_MAP, data_root, rows, write_column_map, write_parquet

# every case but the one without pyarrow writes its collection with pyarrow
needs_pyarrow = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
if importlib.util.find_spec("pyarrow") is not None:
    import pyarrow as pa
    import pyarrow.parquet as pq

EXAMPLE_TASK = REPOSITORY / "examples" / "hf" / "hf-my-cxr-cls.yaml"


def _error(root: Path, name: str = "tiny") -> str:
    with pytest.raises(DataError) as err:
        DATASETS.get(f"hf/{name}").load(root)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _folder(root: Path, name: str = "tiny") -> Path:
    return root / "hf" / name


def _rewrite(path: Path, change) -> None:
    """Read a parquet file, change its table (a function of the table), write it back with its metadata."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def _set(table, column: str, row: int, value):
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values,
                                                                                  type=table.schema.field(column).type))


def _task(tmp: Path, dataset: str, **changes) -> Path:
    spec = yaml.safe_load(EXAMPLE_TASK.read_text())
    spec.update(dataset=dataset, **changes)
    folder = tmp / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / EXAMPLE_TASK.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def _run(tmp: Path, root: Path, tasks: Path) -> list[str]:
    return ["-q", "run", "--method", "random", "--task", EXAMPLE_TASK.stem, "--tasks-dir", str(tasks),
            "--data-root", str(root), "--profile", "smoke", "--results", str(tmp / "results")]


# ----------------------------------------------------------------------------- the column map


@needs_pyarrow
def test_missing_image_column_names_the_column_map_key_and_the_file(tmp_path, capsys):
    root = data_root(tmp_path)
    write_column_map(_folder(root), image="img")
    message = _error(root)
    assert message.startswith(f"{_folder(root) / 'harness_columns.yaml'}: image: column 'img' is not in ")
    assert ".parquet (its columns: [" in message and "did you mean 'image'?" in message
    assert main(["-q", "data", "check", "hf/tiny", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "hf/tiny: PROBLEMS" in out and "image: column 'img' is not in" in out


@needs_pyarrow
def test_a_missing_required_key_and_an_unknown_key_name_the_file_and_the_key(tmp_path):
    root = data_root(tmp_path)
    cmap = _folder(root) / "harness_columns.yaml"
    write_column_map(_folder(root), patient_id=None)
    assert _error(root) == f"{cmap}: missing required key 'patient_id' (the patient id column)"
    mapping = {**COLUMN_MAP, "label": COLUMN_MAP["labels"]}
    del mapping["labels"]
    write_column_map(_folder(root), mapping)
    message = _error(root)
    assert message.startswith(f"{cmap}: unknown key(s) ['label']; did you mean 'labels'")


@needs_pyarrow
def test_no_column_map_and_a_repeated_key_are_one_line(tmp_path):
    root = data_root(tmp_path)
    cmap = _folder(root) / "harness_columns.yaml"
    cmap.write_text("image: image\npatient_id: patient\nimage: picture\n")
    assert _error(root) == (f"{cmap}: image: repeated key (lines 1 and 3); YAML would keep only the last")
    cmap.unlink()
    assert "no harness_columns.yaml: write the column map" in _error(root)


@needs_pyarrow
def test_an_image_column_of_another_type_is_refused(tmp_path):
    root = data_root(tmp_path)
    write_column_map(_folder(root), image="age")
    message = _error(root)
    assert f"{_folder(root) / 'harness_columns.yaml'}: image: column 'age' of " in message
    assert "is double, not an image" in message


# ----------------------------------------------------------------------------- rows


@needs_pyarrow
def test_a_label_value_outside_the_convention_names_file_row_and_column(tmp_path, capsys):
    root = data_root(tmp_path)
    train = _folder(root) / "data" / "train-00000-of-00001.parquet"
    _rewrite(train, lambda t: _set(t, "edema", 4, 2.0))
    message = _error(root)
    assert message.startswith(f"{train}: row 4: edema: label 'Edema': value 2.0 is not in label_values (")
    # the same value is read once the convention says what it means
    write_column_map(_folder(root), label_values={"positive": [1, 2], "negative": [0], "uncertain": [-1],
                                                 "blank": [None]})
    recs = DATASETS.get("hf/tiny").load(root)
    study = pq.read_table(train).column("study").to_pylist()[4]
    assert recs.frame.set_index("study_id").loc[study, "Edema"] == 1.0
    line = cli_error(["run", "--method", "random", "--task", EXAMPLE_TASK.stem, "--tasks-dir",
                      str(_task(tmp_path, "hf/nothing-here")), "--data-root", str(root)], capsys)
    assert "dataset 'hf/nothing-here' is not under the data root" in line


@needs_pyarrow
def test_blank_patient_duplicated_image_id_bad_sex_and_age_name_their_row(tmp_path):
    root = data_root(tmp_path)
    test = _folder(root) / "data" / "test-00000-of-00001.parquet"
    _rewrite(test, lambda t: _set(t, "patient", 2, None))
    assert _error(root) == f"{test}: row 2: patient: blank patient id (every row needs one)"
    write_parquet(_folder(root))
    write_column_map(_folder(root), image_id="patient")  # two images per patient: ids repeat
    assert _error(root).startswith(f"{test}: row 1: patient: image id 'pat004' appears in 60 rows")
    write_column_map(_folder(root))
    _rewrite(test, lambda t: _set(t, "sex", 0, "X"))
    assert _error(root) == f"{test}: row 0: sex: value 'X' is not a sex (M, F, male, female or blank)"
    write_parquet(_folder(root))
    _rewrite(test, lambda t: _set(t, "age", 1, 430.0))  # impossible: counted and set to NaN, the row kept
    recs = DATASETS.get("hf/tiny").load(root)
    assert recs.skipped == {"impossible age (outside 0-120; set to NaN)": 1} and len(recs.frame) == 60


@needs_pyarrow
def test_a_split_column_with_an_unknown_value_and_an_unknown_layout_split(tmp_path):
    root = data_root(tmp_path)
    folder = _folder(root)
    shutil.rmtree(folder / "data")
    write_parquet(folder, split_files=False)
    write_column_map(folder, split="split")
    data = folder / "data" / "collection.parquet"
    _rewrite(data, lambda t: _set(t, "split", 7, "holdout"))
    assert _error(root) == (f"{data}: row 7: split: value 'holdout' is not a split (train, validation, test); map "
                            f"it in split_values of {folder / 'harness_columns.yaml'}")
    write_column_map(folder, split="split", split_values={"holdout": "test"})
    assert DATASETS.get("hf/tiny").load(root).frame["split"].value_counts().to_dict() == {
        "train": 36, "test": 13, "val": 11}
    # a save_to_disk DatasetDict whose split folder is not a split word
    other = data_root(tmp_path / "b", layout="save_to_disk")
    dd = _folder(other) / "dataset_dict.json"
    (_folder(other) / "validation").rename(_folder(other) / "holdout")
    dd.write_text(json.dumps({"splits": ["train", "holdout", "test"]}))
    assert "split 'holdout' (from the layout) is not train, validation or test; map it in split_values" in \
        _error(other)


@needs_pyarrow
def test_a_row_without_an_image_is_a_counted_skip(tmp_path):
    root = data_root(tmp_path)
    train = _folder(root) / "data" / "train-00000-of-00001.parquet"
    _rewrite(train, lambda t: _set(t, "image", 0, None))
    _rewrite(train, lambda t: _set(t, "image", 1, {"bytes": b"", "path": None}))
    recs = DATASETS.get("hf/tiny").load(root)
    assert recs.skipped == {NO_IMAGE: 2} and len(recs.frame) == 58


@needs_pyarrow
def test_a_label_list_with_an_unknown_label(tmp_path):
    folder = tmp_path / "root" / "hf" / "tiny"
    folder.mkdir(parents=True)
    source = rows(n_patients=5)
    findings = ["Effusion"] * len(source["patient"])
    findings[3] = "Efusion"
    pq.write_table(pa.table({"image": source["image"], "patient": source["patient"], "findings": findings}),
                   folder / "train.parquet")
    write_column_map(folder, {"image": "image", "patient_id": "patient",
                              "label_list": {"column": "findings", "names": ["Effusion", "No Finding"]}})
    assert _error(tmp_path / "root") == (f"{folder / 'train.parquet'}: row 3: findings: label 'Efusion' is not one of "
                                         f"the collection's labels ['Effusion', 'No Finding'] (label_list of "
                                         f"{folder / 'harness_columns.yaml'})")


# ----------------------------------------------------------------------------- files


@needs_pyarrow
def test_truncated_parquet_and_arrow_files_name_the_file(tmp_path):
    root = data_root(tmp_path)
    train = _folder(root) / "data" / "train-00000-of-00001.parquet"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    message = _error(root)
    assert message.startswith(f"{train}: not a readable parquet file (") and "copy it again" in message
    other = data_root(tmp_path / "b", layout="save_to_disk")
    arrow = _folder(other) / "validation" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    message = _error(other)
    assert message.startswith(f"{arrow}: ") and "truncated or damaged copy?" in message
    (_folder(other) / "test" / "data-00000-of-00001.arrow").unlink()
    arrow.unlink()
    assert "listed in" in _error(other) and "but missing; copy the collection again" in _error(other)


@needs_pyarrow
def test_a_bad_collection_name_is_an_unknown_dataset_of_the_task(tmp_path, capsys):
    line = cli_error(["run", "--method", "random", "--task", EXAMPLE_TASK.stem, "--tasks-dir",
                      str(_task(tmp_path, "hf/../etc"))], capsys)
    assert line.startswith(f"harness: error: {tmp_path / 'tasks' / EXAMPLE_TASK.name}: dataset: unknown dataset "
                           "'hf/../etc': dataset 'hf/../etc': a collection is named hf/<folder>")
    assert main(["-q", "data", "check", "hf/absent", "--root", str(tmp_path)]) == 2
    assert "hf/absent: NOT FOUND" in capsys.readouterr().out


def test_without_pyarrow_reading_and_exporting_are_one_line(tmp_path):
    """pyarrow blocked in a child process: the message says what to install (exit 2, no traceback)."""
    folder = tmp_path / "root" / "hf" / "tiny"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")  # never opened: pyarrow is missing
    write_column_map(folder)
    code = ("import sys; sys.modules['pyarrow'] = None; from harness.cli import main; "
            f"sys.exit(main(['-q', 'data', 'check', 'hf/tiny', '--root', {str(tmp_path / 'root')!r}]) * 10 + "
            f"main(['-q', 'export', '--results', {str(tmp_path)!r}, '--out', {str(tmp_path / 'x')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY, timeout=120)
    assert out.returncode == 22, out.stderr
    assert "problem: reading Hugging Face-format collections needs pyarrow, which is not installed" in out.stdout
    assert out.stderr.count("harness: error: harness export writes parquet with pyarrow") == 1
    assert "Traceback" not in out.stderr and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- runs


@needs_pyarrow
@pytest.mark.slow
def test_patient_in_two_splits_refused_or_dropped_and_skips_in_the_record(tmp_path, capsys):
    root = data_root(tmp_path, name="my-cxr")
    folder = _folder(root, "my-cxr")
    test = folder / "data" / "test-00000-of-00001.parquet"
    train_patient = pq.read_table(folder / "data" / "train-00000-of-00001.parquet").column("patient")[0].as_py()
    _rewrite(test, lambda t: _set(t, "patient", 0, train_patient))
    _rewrite(test, lambda t: _set(t, "view", 1, ""))  # a blank view: a warning, and the frontal task drops it
    _rewrite(folder / "data" / "validation-00000-of-00001.parquet", lambda t: _set(t, "image", 0, None))
    assert main(["-q", "data", "check", "hf/my-cxr", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert f"patient(s) in more than one split (first: patient {train_patient} in train and test)" in out
    tasks = _task(tmp_path, "hf/my-cxr")
    line = cli_error(_run(tmp_path, root, tasks), capsys)
    assert f"split: hf/my-cxr patient {train_patient} is in both train and test" in line
    assert "train-00000-of-00001.parquet + " in line and str(test) in line
    assert not (tmp_path / "results").exists()

    _task(tmp_path, "hf/my-cxr", split={"method": "official", "test_split": "test", "val_fraction": 0.1,
                                        "on_leak": "drop"})
    assert main(_run(tmp_path, root, tasks)) == 0
    out = capsys.readouterr().out
    assert f"  skipped 1: hf/my-cxr: {NO_IMAGE}" in out and "  warning 1: hf/my-cxr: view blank" in out
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert record["skipped"]["hf/my-cxr: " + NO_IMAGE] == 1
    assert record["skipped"]["hf/my-cxr: patient in more than one split (row removed: kept in its most held-out "
                             "split)"] >= 1
    assert record["skipped"]["hf/my-cxr: view blank or unknown (not in the task's views)"] == 1
    assert record["warnings"]["hf/my-cxr: view blank"] == 1
    assert record["warnings"]["hf/my-cxr: image of a patient in more than one official split"] >= 2


@needs_pyarrow
@pytest.mark.slow
def test_a_task_label_the_collection_lacks_names_the_task_file(tmp_path, capsys):
    root = data_root(tmp_path, name="my-cxr")
    tasks = _task(tmp_path, "hf/my-cxr", labels=["Atelectasis", "Pneumonia"])
    line = cli_error(_run(tmp_path, root, tasks), capsys)
    assert line == (f"harness: error: {tasks / EXAMPLE_TASK.name}: labels: 'Pneumonia' is not a label of hf/my-cxr "
                    f"(its labels: ['Atelectasis', 'Edema', 'No Finding']; from "
                    f"{_folder(root, 'my-cxr') / 'harness_columns.yaml'})")
