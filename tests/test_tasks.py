from pathlib import Path

import pytest

from harness.tasks import TaskSpecError, load_task, task_files

GOOD = """\
name: {name}
version: 1
description: a test task
source: tests
dataset: mock
protocol: linear-probe
labels: [Square, Bar]
split:
  method: patient-hash
metrics: [auroc_macro]
main_metric: auroc_macro
"""


def write(tmp_path: Path, text: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_good_file_loads_frozen(tmp_path):
    spec = load_task(write(tmp_path, GOOD.format(name="t")))
    assert spec.labels == ("Square", "Bar") and spec.version == 1 and spec.fractions == (1.0,)
    with pytest.raises(AttributeError):
        spec.version = 2  # frozen


@pytest.mark.parametrize("edit, message", [
    (lambda s: s + "colour: blue\n", "unknown key(s) ['colour']"),
    (lambda s: s + "fractons: [0.1]\n", "did you mean 'fractions'"),
    (lambda s: s.replace("version: 1\n", ""), "missing required key 'version'"),
    (lambda s: s.replace("version: 1", "version: one"), "version: expected an integer, got 'one'"),
    (lambda s: s.replace("labels: [Square, Bar]", "labels: Square"), "labels: expected a list"),
    (lambda s: s + "fractions: [0.1, 2]\n", "fractions: 2.0 is not in (0, 1]"),
    (lambda s: s.replace("main_metric: auroc_macro", "main_metric: f1"), "main_metric 'f1' is not listed"),
    (lambda s: s + "label_policy: {uncertain: maybe}\n", "label_policy.uncertain: 'maybe'"),
    (lambda s: s.replace("method: patient-hash", "method: random"), "split.method: 'random'"),
    (lambda s: s.replace("method: patient-hash", "methd: official"), "unknown key(s) ['methd']"),
    (lambda s: s + "requires: [telepathy]\n", "unknown capability ['telepathy']"),
    (lambda s: s.replace("name: t", "name: other"), "must equal the file name"),
    (lambda s: s + "  bad indent: [\n", "not valid YAML"),
])
def test_bad_files_name_file_and_key(tmp_path, edit, message):
    path = write(tmp_path, edit(GOOD.format(name="t")))
    with pytest.raises(TaskSpecError) as err:
        load_task(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_every_shipped_task_validates():
    files = task_files()
    assert any(f.stem == "mock" for f in files)
    for path in files:
        load_task(path)
