"""The bad-input corpus: every damaged input gets its exact, documented behaviour.

Each case damages one thing in a copy of a small synthetic world (the datasets' real
layouts, written by ``harness.synth``) or in a task file / submission / command line,
and asserts exactly what happens: a ``DataError`` (or ``TaskSpecError`` /
``SubmissionError`` / ``RunError``) whose ONE-line message names the file, row and
field; or a counted skip with its reason and count; or documented acceptance. Through
the CLI (``harness.cli.main`` in process) expected mistakes exit 2 with one
``harness: error:`` line on stderr and no traceback, and counted skips are printed in
the run summary (``skipped N: reason``).

The adapter-level unit tests (``test_data_*.py``, ``test_tasks.py``, ``test_submit.py``)
cover the parsers on hand-written fakes; this corpus runs the same kinds of damage on the
synthetic world's files and through the command line, and adds the cases they lack.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from examples.my_encoder import MyEncoder
from harness.catalog import DATASETS
from harness.cli import main
from harness.cohort import build_task_data
from harness.data.images import decode_image
from harness.data.schema import DataError
from harness.tasks import get_task
from tests.corpus import (
    CHEX,
    FOLDERS,
    LABELS,
    META,
    MIMIC_JPG,
    NIH_CSV,
    SPLIT,
    add_column,
    cli_error,
    copy_of,
    drop_column,
    lines,
    load,
    one_line_error,
    set_cell,
)

# ------------------------------------------------------------------------------------------ the world


@pytest.fixture(scope="module")
def world(corpus_world) -> Path:
    return corpus_world


@pytest.fixture(scope="module")
def baseline(world) -> dict[str, dict[str, int]]:
    """Each dataset's counted skips on the undamaged world (planted quirks may already count)."""
    return {name: dict(DATASETS.get(name).load(world, data_source="synthetic").skipped) for name in FOLDERS}


# ------------------------------------------------------------------------------------------ errors

def _mimic_missing_column(root: Path) -> str:
    drop_column(root / MIMIC_JPG / META, "ViewPosition")
    return rf"{META}:1: header: missing column\(s\) \['ViewPosition'\]"


def _mimic_wrong_dtype(root: Path) -> str:
    line = set_cell(root / MIMIC_JPG / SPLIT, 3, "subject_id", "abc")
    return rf"{SPLIT}:{line}: subject_id: value 'abc' is not an integer identifier"


def _mimic_unknown_label(root: Path) -> str:
    line = set_cell(root / MIMIC_JPG / LABELS, 2, "Edema", "0.5")
    return rf"{LABELS}:{line}: Edema: value '0.5' is not one of 1.0, 0.0, -1.0 or blank"


def _mimic_duplicated_id(root: Path) -> str:
    path = root / MIMIC_JPG / SPLIT
    first = lines(path)[1].split(",")[0]
    line = set_cell(path, 4, "dicom_id", first)
    return rf"{SPLIT}:{line}: dicom_id: duplicated dicom_id"


def _mimic_non_utf8_table(root: Path) -> str:
    path = root / MIMIC_JPG / META
    rows = lines(path)
    data = "\n".join(rows).encode().replace(rows[5].encode(), rows[5].encode() + b"\xff", 1)
    path.write_bytes(gzip.compress(data))
    return rf"{META}:6: encoding: byte \d+ of the line is not valid UTF-8"


def _mimic_non_utf8_report(root: Path) -> str:
    report = sorted((root / "mimic-cxr" / "files").rglob("s*.txt"))[0]
    report.write_bytes(report.read_bytes()[:20] + b"\xe9" + report.read_bytes()[20:])
    return rf"{report.name}: byte 20: encoding: not valid UTF-8"


def _mimiciv_impossible_age(root: Path) -> str:
    path = next((root / "mimiciv").rglob("patients.csv.gz"))
    line = set_cell(path, 1, "anchor_age", "412")
    return rf"patients.csv.gz:{line}: anchor_age: value 412 is not an age"


def _chexpert_missing_column(root: Path) -> str:
    drop_column(root / "chexpert" / CHEX / "train.csv", "Sex")
    return r"train.csv:1: header: missing column\(s\) \['Sex'\]"


def _chexpert_unknown_label(root: Path) -> str:
    line = set_cell(root / "chexpert" / CHEX / "train.csv", 2, "Edema", "2")
    return rf"train.csv:{line}: Edema: unexpected value '2' \(expected 1.0, 0.0, -1.0 or blank\)"


def _chexpert_impossible_age(root: Path) -> str:
    line = set_cell(root / "chexpert" / CHEX / "train.csv", 1, "Age", "150")
    return rf"train.csv:{line}: Age: unexpected value '150' \(expected years 0-90 or blank\)"


def _chexpert_duplicated_path(root: Path) -> str:
    path = root / "chexpert" / CHEX / "valid.csv"
    first = lines(path)[1].split(",")[0]
    line = set_cell(path, 2, "Path", first)
    return rf"valid.csv:{line}: Path: unexpected value '.*' \(expected each image once\)"


def _chexpert_empty_csv(root: Path) -> str:
    (root / "chexpert" / CHEX / "valid.csv").write_bytes(b"")
    return r"valid.csv: cannot parse CSV: No columns to parse from file"


def _nih_wrong_dtype(root: Path) -> str:
    line = set_cell(root / "nih14" / NIH_CSV, 3, "Patient Age", "forty")
    return rf"{NIH_CSV}:{line}: Patient Age: unexpected value 'forty'"


def _nih_unknown_label(root: Path) -> str:
    line = set_cell(root / "nih14" / NIH_CSV, 0, "Finding Labels", "Effusion|Covid")
    return rf"{NIH_CSV}:{line}: Finding Labels: unknown label 'Covid' in 'Effusion\|Covid'"


def _nih_extra_column(root: Path) -> str:
    add_column(root / "nih14" / NIH_CSV, "Comment", "x")  # the NIH header is matched exactly
    return rf"{NIH_CSV}:1: header: .* is not the NIH header"


def _nih_non_utf8(root: Path) -> str:
    path = root / "nih14" / NIH_CSV
    rows = lines(path)
    rows[7] = rows[7].replace(",M,", ",M\udcff,") if ",M," in rows[7] else rows[7].replace(",F,", ",F\udcff,")
    path.write_bytes("\n".join(rows).encode("utf-8", "surrogateescape"))
    return rf"{NIH_CSV}:8: encoding: byte \d+ of the line is not valid UTF-8"


def _openi_xml_does_not_parse(root: Path) -> str:
    xml = root / "openi" / "ecgen-radiology" / "3.xml"
    xml.write_text(xml.read_text()[:300])
    return r"ecgen-radiology/3.xml: XML does not parse \(.*line \d+, column \d+\)"


def _openi_empty_xml(root: Path) -> str:
    (root / "openi" / "ecgen-radiology" / "5.xml").write_bytes(b"")
    return r"ecgen-radiology/5.xml: XML does not parse \(no element found: line 1, column 0\)"


ERRORS = {
    "mimic: missing CSV column": ("mimic-cxr", _mimic_missing_column),
    "mimic: wrong dtype": ("mimic-cxr", _mimic_wrong_dtype),
    "mimic: unknown label value": ("mimic-cxr", _mimic_unknown_label),
    "mimic: duplicated ids": ("mimic-cxr", _mimic_duplicated_id),
    "mimic: non-UTF-8 table": ("mimic-cxr", _mimic_non_utf8_table),
    "mimic: non-UTF-8 report": ("mimic-cxr", _mimic_non_utf8_report),
    "mimic-iv: impossible age": ("mimic-cxr", _mimiciv_impossible_age),
    "chexpert: missing CSV column": ("chexpert", _chexpert_missing_column),
    "chexpert: unknown label value": ("chexpert", _chexpert_unknown_label),
    "chexpert: impossible age": ("chexpert", _chexpert_impossible_age),
    "chexpert: duplicated ids": ("chexpert", _chexpert_duplicated_path),
    "chexpert: empty CSV": ("chexpert", _chexpert_empty_csv),
    "nih14: wrong dtype": ("nih14", _nih_wrong_dtype),
    "nih14: unknown label value": ("nih14", _nih_unknown_label),
    "nih14: extra column": ("nih14", _nih_extra_column),
    "nih14: non-UTF-8 CSV": ("nih14", _nih_non_utf8),
    "openi: XML that does not parse": ("openi", _openi_xml_does_not_parse),
    "openi: empty XML file": ("openi", _openi_empty_xml),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_file_is_a_one_line_data_error_naming_file_row_field(case, world, tmp_path):
    dataset, damage = ERRORS[case]
    root = copy_of(world, tmp_path, dataset)
    expected = damage(root)
    message = one_line_error(dataset, root)
    assert re.search(expected, message), (expected, message)
    report = DATASETS.get(dataset).check(root)  # `harness data check` says the same, without raising
    assert not report.ok and any(re.search(expected, p) for p in report.problems), report.problems


# ------------------------------------------------------------------------------------------ counted skips / accepted


def _first_image(root: Path, dataset: str) -> Path:
    return Path(load(dataset, root).frame["path"].iloc[0])


def _mimic_missing_image(root: Path):
    _first_image(root, "mimic-cxr").unlink()
    return {"image file missing": 1}


def _mimic_empty_report(root: Path):
    records = load("mimic-cxr", root)
    row = records.frame.iloc[0]
    report = next((root / "mimic-cxr" / "files").rglob(f"s{row['study_id']}.txt"))
    report.write_bytes(b"")
    return {"report empty": int((records.frame["study_id"] == row["study_id"]).sum())}


def _chexpert_missing_image(root: Path):
    _first_image(root, "chexpert").unlink()
    return {"image file missing": 1}


def _nih_missing_image(root: Path):
    records = load("nih14", root)
    boxed = set(records.extras["boxes"]["image_id"])  # (an image with boxes would also count its boxes)
    Path(records.frame.loc[~records.frame["image_id"].isin(boxed), "path"].iloc[0]).unlink()
    return {"image file missing": 1}


def _nih_impossible_age(root: Path):
    set_cell(root / "nih14" / NIH_CSV, 2, "Patient Age", "412")
    return {"impossible age": 1}


def _openi_missing_image(root: Path):
    _first_image(root, "openi").unlink()
    return {"image file missing": 1}


def _chexpert_extra_column(root: Path):
    add_column(root / "chexpert" / CHEX / "train.csv", "Comment", "x")
    return {}


def _mimic_extra_column(root: Path):
    add_column(root / MIMIC_JPG / META, "Rows", "3056")
    return {}


SKIPS = {
    "mimic: missing image": ("mimic-cxr", _mimic_missing_image),
    "mimic: empty report": ("mimic-cxr", _mimic_empty_report),
    "chexpert: missing image": ("chexpert", _chexpert_missing_image),
    "nih14: missing image": ("nih14", _nih_missing_image),
    "nih14: impossible age": ("nih14", _nih_impossible_age),
    "openi: missing image": ("openi", _openi_missing_image),
    "chexpert: extra column (ignored)": ("chexpert", _chexpert_extra_column),
    "mimic: extra column (ignored)": ("mimic-cxr", _mimic_extra_column),
}


@pytest.mark.parametrize("case", list(SKIPS))
def test_damage_that_is_a_counted_skip_or_accepted(case, world, tmp_path, baseline):
    dataset, damage = SKIPS[case]
    root = copy_of(world, tmp_path, dataset)
    n_before = len(load(dataset, root).frame)
    added = damage(root)
    records = load(dataset, root)
    expected = dict(baseline[dataset])
    for reason, n in added.items():
        expected[reason] = expected.get(reason, 0) + n
    assert records.skipped == expected
    dropped = added.get("image file missing", 0)
    assert len(records.frame) == n_before - dropped  # only a missing file removes a row
    if "impossible age" in added:
        assert records.frame["age"].isna().sum() >= 1 and (records.frame["age"].dropna() <= 100).all()


def small_world_tasks(tmp: Path) -> Path:
    """nih14-cls with a larger validation carve-out: the 0.05-scale world has few NIH patients."""
    folder = tmp / "tasks"
    folder.mkdir(exist_ok=True)
    text = Path(get_task("nih14-cls").path).read_text()
    (folder / "nih14-cls.yaml").write_text(text.replace("val_fraction: 0.1", "val_fraction: 0.4"))
    return folder


def _cohort(root: Path, dataset: str, task: str):
    spec = get_task(task, small_world_tasks(root.parent) if task == "nih14-cls" else None)
    return build_task_data(spec, load(dataset, root), 32, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "not an image"])
def test_undecodable_image_is_a_counted_skip_of_the_cohort(damage, world, tmp_path):
    root = copy_of(world, tmp_path, "mimic-cxr")
    n = sum(len(s) for s in (_cohort(root, "mimic-cxr", "mimic-cls").split(x) for x in ("train", "val", "test")))
    records = load("mimic-cxr", root)
    frontal = records.frame[records.frame["view"].isin(["PA", "AP"])]
    image = Path(frontal["path"].iloc[0])
    data = image.read_bytes()
    image.write_bytes({"truncated": data[: len(data) // 3], "zero-byte": b"",
                       "not an image": b"<html>not a jpeg</html>"}[damage])
    cohort = _cohort(root, "mimic-cxr", "mimic-cls")
    assert cohort.skipped["unreadable image (row removed)"] == 1
    assert sum(len(cohort.split(x)) for x in ("train", "val", "test")) == n - 1
    reason = {"zero-byte": "file is empty (0 bytes)", "truncated": "cannot decode image",
              "not an image": "UnidentifiedImageError"}[damage]
    with pytest.raises(DataError, match=re.escape(str(image)) + ".*" + re.escape(reason)):
        decode_image(image, 32)


@pytest.mark.parametrize("mode", ["RGBA", "I;16"])
def test_rgba_and_16_bit_pngs_are_decoded_not_skipped(mode, world, tmp_path):
    root = copy_of(world, tmp_path, "nih14")
    image = _first_image(root, "nih14")
    grey = np.asarray(Image.open(image).convert("L"))
    before = decode_image(image, 32)
    if mode == "RGBA":
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 17)])  # alpha is ignored
        Image.fromarray(rgba, mode="RGBA").save(image)
    else:  # 12-bit data in a 16-bit PNG, as DICOM exports store it
        Image.fromarray(grey.astype(np.uint16) * 16 + 7).save(image)
    assert Image.open(image).mode == mode
    after = decode_image(image, 32)
    if mode == "RGBA":
        assert np.array_equal(after, before)
    else:  # rescaled by the image's own range: the same picture up to that stretch
        assert np.corrcoef(after.ravel().astype(float), before.ravel().astype(float))[0, 1] > 0.99
    cohort = _cohort(root, "nih14", "nih14-cls")
    assert "unreadable image (row removed)" not in cohort.skipped


# ------------------------------------------------------------------------------------------ through the CLI


def test_cli_run_on_a_corrupt_report_is_one_line(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "mimic-cxr")
    expected = _mimic_non_utf8_report(root)
    line = cli_error(["run", "--method", "random", "--task", "mimic-cls", "--profile", "smoke", "--data-root",
                      str(root), "--results", str(tmp_path / "r")], capsys)
    assert re.search(expected, line), line
    assert not (tmp_path / "r").exists()


def test_cli_run_prints_counted_skips_in_the_summary(world, tmp_path, capsys):
    root = copy_of(world, tmp_path, "nih14")
    _nih_impossible_age(root)
    _nih_missing_image(root)
    frame = load("nih14", root).frame
    frame = frame[frame["view"].isin(["PA", "AP"])]
    Path(frame["path"].iloc[3]).write_bytes(b"")  # zero-byte PNG
    assert main(["-q", "run", "--method", "random", "--task", "nih14-cls", "--profile", "smoke", "--data-root",
                 str(root), "--results", str(tmp_path / "r"), "--tasks-dir", str(small_world_tasks(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "  skipped 1: nih14: image file missing" in out
    assert "  skipped 1: nih14: impossible age" in out
    assert "  skipped 1: unreadable image (row removed)" in out


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "0"], "harness: error: --fraction must be in (0, 1], got 0.0"),
    (["--fraction", "nan"], "harness: error: --fraction must be in (0, 1], got nan"),
    (["--method", "msn_ehr"], "harness: error: unknown method 'msn_ehr'; did you mean 'msn-ehr'"),
    (["--task", "nih-cls"], "harness: error: unknown task 'nih-cls'; did you mean 'nih14-cls'"),
    (["--profile", "smoke", "--set", "image_size=big"],
     "harness: error: random config key 'image_size': expected int like the default 32, got 'big'"),
    (["--profile", "smoke", "--set", "image_size"], "harness: error: --set expects key=value, got 'image_size'"),
])
def test_cli_mistakes_are_one_line(argv, message, tmp_path, capsys):
    base = {"--method": "random", "--task": "mock"}
    for key in ("--method", "--task"):
        if key in argv:
            base.pop(key)
    args = ["run", *[x for kv in base.items() for x in kv], *argv, "--results", str(tmp_path / "r")]
    line = cli_error(args, capsys)
    assert line.startswith(message), line


def test_cli_missing_data_root_and_absent_dataset(world, tmp_path, capsys):
    line = cli_error(["run", "--method", "random", "--task", "nih14-cls", "--data-root", str(tmp_path / "nope")],
                     capsys)
    assert line == f"harness: error: data root {tmp_path / 'nope'} is not a folder (from --data-root or " \
                   "$HARNESS_DATA_ROOT)"
    root = copy_of(world, tmp_path, "openi")
    line = cli_error(["run", "--method", "random", "--task", "nih14-cls", "--data-root", str(root)], capsys)
    assert line.startswith(f"harness: error: dataset 'nih14' is not under the data root {root}")


def test_cli_argparse_type_error_is_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--method", "random", "--task", "mock", "--fraction", "half"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --fraction: invalid float value: 'half'" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ task files

GOOD_TASK = (Path(__file__).resolve().parent.parent / "tasks" / "mock.yaml").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s + "colour: blue\n", "unknown key(s) ['colour']"),
    (lambda s: s.replace("version: 1", "version: '1'"), "version: expected an integer, got '1'"),
    (lambda s: s.replace("version: 1\n", ""), "missing required key 'version'"),
    (lambda s: s.replace("dataset: mock", "dataset: mimic-cx"), "unknown dataset 'mimic-cx'; did you mean "
                                                                "'mimic-cxr'?"),
    (lambda s: s.replace("protocol: linear-probe", "protocol: linear_probe"),
     "unknown protocol 'linear_probe'; did you mean 'linear-probe'?"),
])
def test_harness_validate_names_the_file_and_the_key(edit, message, tmp_path, capsys):
    path = tmp_path / "mock.yaml"
    path.write_text(edit(GOOD_TASK))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ERROR  {path}: ") and message in out[0], out
    assert out[1] == "0 valid, 1 invalid"


def test_run_with_a_bad_task_file_is_one_line(tmp_path, capsys):
    (tmp_path / "mock.yaml").write_text(GOOD_TASK.replace("fractions: [0.1, 1.0]", "fractions: 0.1"))
    line = cli_error(["run", "--method", "random", "--task", "mock", "--tasks-dir", str(tmp_path)], capsys)
    assert line == f"harness: error: {tmp_path / 'mock.yaml'}: fractions: expected a list, got float"


# ------------------------------------------------------------------------------------------ submissions


class _Bad(MyEncoder):
    mode = ""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        out = super().encode_image(images)
        if self.mode == "shape":
            return out[:, :5]
        if self.mode == "nan":
            return out.masked_fill(torch.zeros_like(out, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
                                   float("nan"))
        if self.mode == "raise":
            raise ValueError("weights not loaded")
        if self.mode == "random":
            return out + 1e-3 * torch.randn_like(out)
        return out


def _factory(mode: str):
    def build() -> _Bad:
        enc = _Bad().eval()
        enc.mode = mode
        return enc
    return build


wrong_shape, nan_output, raising, non_deterministic = (_factory(m) for m in ("shape", "nan", "raise", "random"))


def no_card():
    class Bare(torch.nn.Module):
        num_features = 4

        def encode_image(self, images):
            return images.flatten(1)[:, :4]
    return Bare()


@pytest.mark.parametrize("factory, message", [
    ("wrong_shape", "encode_image must return (4, 32); got (4, 5)"),
    ("nan_output", "encode_image returned NaN or inf"),
    ("raising", "encode_image raised ValueError: weights not loaded"),
    ("non_deterministic", "encode_image is not deterministic in eval mode"),
    ("no_card", "the encoder has no `card`"),
])
def test_bad_submission_is_refused_in_one_line(factory, message, tmp_path, capsys):
    line = cli_error(["submit", f"tests.test_bad_inputs:{factory}", "--name", f"bad-{factory}", "--tasks", "mock",
                      "--profile", "smoke", "--results", str(tmp_path / "r")], capsys)
    # harness/encoders/submission.py words the details; the contract is one line that starts so and names the problem
    assert line.startswith("harness: error: the submitted encoder failed its checks: ") and message in line, line
    assert not (tmp_path / "r").exists()


def test_submission_missing_a_capability_is_refused_before_any_work(tmp_path, capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", "img-only", "--tasks", "mock",
                      "mimic-retrieval", "--results", str(tmp_path / "r")], capsys)
    assert "lacks capabilities for ['mimic-retrieval']" in line and "(it has ['image', 'trainable'])" in line
    assert not (tmp_path / "r").exists()  # mock was not scored either: refusal comes first


def test_submission_spec_that_does_not_import(capsys):
    line = cli_error(["submit", "no_such_pkg.enc:build", "--name", "ghost", "--tasks", "mock"], capsys)
    assert line.startswith("harness: error: cannot import 'no_such_pkg.enc:build': No module named 'no_such_pkg'")


def test_dispatched_runs_print_their_counted_skips_too(tmp_path):
    from harness.dispatch import outcomes
    from harness.dispatch.runner import RunRequest
    from tests.test_results import make_record

    path = tmp_path / "rec.json"
    path.write_text(__import__("json").dumps(make_record(0, skipped={"nih14: impossible age": 2})))
    out = outcomes.describe([outcomes.JobOutcome(RunRequest(method="random", task="nih14-cls"), "done",
                                                 record_path=path)])
    assert out.splitlines()[1] == "  skipped 2: nih14: impossible age"
