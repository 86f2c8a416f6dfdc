import numpy as np
import pandas as pd
import pytest

from harness.cohort import apply_label_policy, assign_splits, build_task_data, fraction_mask, patient_hash_split
from harness.data.schema import DataError, Records
from harness.tasks import LabelPolicy, SplitSpec, TaskSpec


class ArrayStore:
    """A real in-memory image store (same interface as harness.data.images.ImageStore)."""

    def __init__(self, n: int, size: int, bad: tuple[int, ...] = ()) -> None:
        self.size = size
        self.images = np.arange(n * size * size, dtype=np.int64).reshape(n, size, size).astype(np.uint8)
        self.bad = np.zeros(n, bool)
        self.bad[list(bad)] = True

    def __getitem__(self, idx):
        return self.images[idx]


def frame(n_patients=40, per=3, split=""):
    rows = []
    for p in range(n_patients):
        for k in range(per):
            rows.append({"dataset": "d", "image_id": f"{p}-{k}", "patient_id": f"P{p}", "study_id": f"{p}",
                         "view": "PA" if k else "LATERAL", "split": split, "path": f"/x/{p}-{k}.png",
                         "institution": "", "indication": "", "findings": "", "impression": "", "age": 50.0,
                         "sex": "F", "A": [1.0, 0.0, -1.0, np.nan][p % 4], "B": float(k % 2)})
    return pd.DataFrame(rows)


def test_patient_hash_split_is_patient_disjoint_and_stable():
    f = frame()
    s1 = patient_hash_split(f["patient_id"], 0.2, 0.2, "salt")
    s2 = patient_hash_split(f["patient_id"], 0.2, 0.2, "salt")
    assert (s1 == s2).all() and set(s1) == {"train", "val", "test"}
    assert f.assign(s=s1).groupby("patient_id")["s"].nunique().max() == 1
    assert not (patient_hash_split(f["patient_id"], 0.2, 0.2, "other") == s1).all()


def test_fractions_are_nested_by_patient_and_seeded():
    pids = frame(n_patients=200)["patient_id"]
    m1, m10, m100 = (fraction_mask(pids, f, seed=3) for f in (0.01, 0.1, 1.0))
    assert m100.all() and (m1 <= m10).all()
    assert pids[m10].nunique() == 20 and pids[m1].nunique() == 2
    assert (fraction_mask(pids, 0.1, seed=3) == m10).all()
    assert not (fraction_mask(pids, 0.1, seed=4) == m10).all()
    with pytest.raises(ValueError):
        fraction_mask(pids, 0.0, 0)


def test_label_policy():
    f = pd.DataFrame({"A": [1.0, 0.0, -1.0, np.nan], "B": [-1.0, -1.0, np.nan, 1.0]})
    y = apply_label_policy(f, ("A", "B"), LabelPolicy(uncertain="zero", blank="ignore", per_label={"B": "one"}))
    np.testing.assert_array_equal(y[:, 0], [1, 0, 0, np.nan])
    np.testing.assert_array_equal(y[:, 1], [1, 1, np.nan, 1])
    with pytest.raises(DataError, match="label 'A' has value 2.0"):
        apply_label_policy(pd.DataFrame({"A": [2.0]}), ("A",), LabelPolicy())


def test_official_split_carves_val_and_external_test():
    f = frame(split="train")
    f.loc[f["patient_id"].isin(["P1", "P2"]), "split"] = "test"
    s = assign_splits(f, SplitSpec(val_fraction=0.25), has_external_test=False)
    assert set(s) == {"train", "val", "test"} and (s[f["split"] == "test"] == "test").all()
    s_ext = assign_splits(f, SplitSpec(), has_external_test=True)
    assert "test" not in set(s_ext)
    with pytest.raises(DataError, match="no official split"):
        assign_splits(frame(split=""), SplitSpec(), has_external_test=False)


def test_build_task_data_filters_views_drops_bad_images_and_hashes():
    f = frame()
    recs = Records(dataset="d", frame=f, label_names=("A", "B"), root=None, data_source="synthetic")
    task = TaskSpec(name="t", version=1, description="", source="", dataset="d", protocol="linear-probe",
                    main_metric="auroc_macro", metrics=("auroc_macro",), views=("PA",), labels=("A", "B"),
                    split=SplitSpec(method="patient-hash", val_fraction=0.2, test_fraction=0.2))
    pa_rows = np.flatnonzero(f["view"] == "PA")
    seen = {}

    def factory(paths, size):
        seen["paths"] = paths
        seen["store"] = ArrayStore(len(paths), size, bad=(0,))
        return seen["store"]

    data = build_task_data(task, recs, 4, store_factory=factory)
    assert len(seen["paths"]) == len(pa_rows)  # laterals never decoded
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == len(pa_rows) - 1 and data.skipped["unreadable image (row removed)"] == 1
    for split in (data.train, data.val, data.test):
        assert (split.frame["view"] == "PA").all()
        assert split.targets.shape == (len(split), 2)
        # images line up with rows: image i of the split is the store image of that row's path
        first = split.frame["image_id"].iloc[0]
        np.testing.assert_array_equal(split.images[0], seen['store'].images[seen["paths"].index(f"/x/{first}.png")])
    assert len(data.split_sha256) == 64
    again = build_task_data(task, recs, 4, store_factory=lambda p, s: ArrayStore(len(p), 4, bad=(0,)))
    assert again.split_sha256 == data.split_sha256


def _task(**kw) -> TaskSpec:
    base = dict(name="t", version=1, description="", source="", dataset="d", protocol="linear-probe",
                main_metric="auroc_macro", metrics=("auroc_macro",), views=("PA",), labels=("A", "B"),
                split=SplitSpec(method="official", test_split="test", val_fraction=0.25), path="/tasks/t.yaml")
    return TaskSpec(**{**base, **kw})


def _official(leak: bool = True) -> Records:
    """40 patients split train / val / test by number; P0 also has a frontal image in test when ``leak``."""
    f = frame()
    f["split"] = np.where(f["patient_id"].str[1:].astype(int) < 28, "train",
                          np.where(f["patient_id"].str[1:].astype(int) < 34, "val", "test"))
    if leak:
        f.loc[f["image_id"] == "0-2", "split"] = "test"
    return Records(dataset="d", frame=f, label_names=("A", "B"), root=None, data_source="synthetic",
                   split_files={"train": "/d/split.csv", "val": "/d/split.csv", "test": "/d/split.csv"})


def _store(paths, size):
    return ArrayStore(len(paths), size)


def test_a_leak_is_refused_naming_file_patient_and_splits():
    with pytest.raises(DataError) as err:
        build_task_data(_task(), _official(), 4, store_factory=_store)
    assert str(err.value) == (
        "/d/split.csv: split: d patient P0 is in both train and test (1 patient(s) of the cohort in more than one "
        "split); the split is not patient-disjoint: fix the file, or set split: {on_leak: drop} in /tasks/t.yaml "
        "to keep each such patient only in its most held-out split")
    lateral_only = _official(leak=False)  # a leak the task's views never see is not the task's leak
    lateral_only.frame.loc[lateral_only.frame["image_id"] == "0-0", "split"] = "test"  # k = 0 is the LATERAL
    data = build_task_data(_task(), lateral_only, 4, store_factory=_store)
    assert "P0" in set(data.train.frame["patient_id"]) and not any("split" in k for k in data.skipped)


def test_on_leak_drop_keeps_the_most_held_out_split_and_counts():
    task = _task(split=SplitSpec(method="official", test_split="test", on_leak="drop"))
    data = build_task_data(task, _official(), 4, store_factory=_store)
    assert list(data.test.frame.loc[data.test.frame["patient_id"] == "P0", "image_id"]) == ["0-2"]
    assert "P0" not in set(data.train.frame["patient_id"]) | set(data.val.frame["patient_id"])
    assert data.skipped == {"d: patient in more than one split (row removed: kept in its most held-out split)": 1}
    clean = build_task_data(task, _official(leak=False), 4, store_factory=_store)
    assert len(clean.train) + len(clean.val) + len(clean.test) == 80 and clean.skipped == {}


def test_blank_and_unknown_views_left_out_are_counted_only_where_the_task_would_use_them():
    recs = _official(leak=False)
    f = recs.frame
    f.loc[f["image_id"] == "1-1", "view"] = ""         # train, blank
    f.loc[f["image_id"] == "2-1", "view"] = "SWIMMERS"  # train, unknown to this dataset
    f.loc[f["image_id"] == "3-1", "view"] = "LL"        # train, a known non-frontal view: the task's choice
    f.loc[f["image_id"] == "35-1", "view"] = ""        # test: used
    recs.unknown_views = ("SWIMMERS",)
    data = build_task_data(_task(), recs, 4, store_factory=_store)
    assert data.skipped == {"d: view blank or unknown (not in the task's views)": 3}
    unused_test = build_task_data(_task(split=SplitSpec(test_split="val")), recs, 4, store_factory=_store)
    assert unused_test.skipped == {"d: view blank or unknown (not in the task's views)": 2}  # official test unused


def test_labelled_tasks_remove_rows_without_a_label_row_and_warnings_are_carried():
    recs = _official(leak=False)
    recs.frame["labelled"] = ~recs.frame["patient_id"].isin(["P1", "P30"])
    recs.warnings = {"study has no label row": 6}
    data = build_task_data(_task(), recs, 4, store_factory=_store)
    assert data.skipped == {"d: no label row for the study (row removed: labelled task)": 4}  # 2 frontal each
    assert data.warnings == {"d: study has no label row": 6}
    rows = set().union(*(set(data.split(s).frame["patient_id"]) for s in ("train", "val", "test")))
    assert not {"P1", "P30"} & rows and "labelled" not in data.train.frame.columns
    unlabelled = build_task_data(_task(labels=()), recs, 4, store_factory=_store)
    assert unlabelled.skipped == {} and "P1" in set(unlabelled.train.frame["patient_id"])
