"""``harness power``: the evidence document, end to end on a tiny synthetic world (smoke profile).

The document's tables are parsed back and checked against what they claim to copy: the sizes
against the task's own cohort (``runner.prepare``) and the records' counts, the values and CI
half-widths against the records the runs wrote, the paired column against the records' values.
The CI target's PASS / FAIL rule is checked on hand-made cells.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import harness
from harness.bench.power.document import TARGET, check_target
from harness.bench.power.measure import Cell, Grid
from harness.cli import main
from harness.dispatch.runner import RunRequest, prepare
from harness.results import load_records, world_label
from harness.tasks import get_task

TASKS = ("mimic-cls", "mimic-regen", "nih14-loc", "mimic-retrieval-1k")
METHODS = ("random", "imagenet")


def _table(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``## heading``, as one dict per row (column header -> cell)."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


@pytest.fixture(scope="module")
def power(tmp_path_factory):
    """One ``harness power`` run: (the document, its stdout, the results folder, the world)."""
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("power")
    world = root / "world"
    write_world(world, sources=("mimic", "nih14"), scale=0.15, seed=2, progress=False)
    out, results = root / "power.md", root / "results"
    argv = ["-q", "power", "--methods", *METHODS, "--tasks", *TASKS, "--profile", "smoke", "--data-root", str(world),
            "--results", str(results), "--out", str(out)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return out.read_text(), stdout.getvalue(), results, world


def _records(results: Path) -> dict[tuple[str, str], dict]:
    records, problems = load_records(results)
    assert not problems
    return {(r["task"], r["method"]): r for r in records}


@pytest.mark.slow
def test_document_says_what_ran_and_on_what(power):
    text, stdout, results, world = power
    assert text.startswith("# Statistical power") and "(synthetic data)" in text.splitlines()[0]
    assert "> **Synthetic data.**" in text
    label = world_label(next(iter(_records(results).values())))  # generator, its version, seed, scale, calibration
    assert label.startswith("synthetic world harness.synth v") and "seed 2, scale 0.15" in label and label in text
    assert f"python -m harness -q power --methods random imagenet --tasks {' '.join(TASKS)}" in text
    assert "profile smoke, label fraction 1, seed 0" in text
    assert re.search(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ cores", text)
    assert f"harness {harness.__version__} (commit " in text


@pytest.mark.slow
def test_rows_are_every_method_on_every_task_with_capabilities(power):
    text, _, results, _ = power
    rows = _table(text, "Main metric and its 95 % CI")
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in TASKS for m in METHODS]
    status = {(r["task"], r["method"]): r["value"] for r in rows}
    for task in ("nih14-loc", "mimic-retrieval-1k"):  # imagenet has no text tower: never run there
        assert status[(task, "imagenet")].startswith("not capable: method 'imagenet' lacks capability")
    records = _records(results)
    assert (("nih14-loc", "imagenet") not in records) and (("mimic-cls", "imagenet") in records)
    for r in rows:  # the metric comes from the task file, whatever it is
        assert r["main metric"] == get_task(r["task"]).main_metric


@pytest.mark.slow
def test_values_and_half_widths_are_the_records(power):
    text, _, results, _ = power
    records = _records(results)
    rows = {(r["task"], r["method"]): r for r in _table(text, "Main metric and its 95 % CI")}
    checked = 0
    for key, rec in records.items():
        row = rows[key]
        main_metric = rec["main_metric"]
        assert row["value"] == f"{rec['metrics'][main_metric]:.4f}"
        lo, hi = rec["ci"].get(main_metric, (float("nan"), float("nan")))
        if lo == lo and hi == hi:
            assert row["95 % CI"] == f"[{lo:.4f}, {hi:.4f}]"
            assert row["half-width"] == f"{(hi - lo) / 2:.4f}"
            checked += 1
        else:
            assert row["half-width"] == "n/m" and row["95 % CI"].startswith("n/m: ")
    assert checked >= 2  # mimic-cls's two runs at least have an interval on this world
    paired = rows[("mimic-cls", "imagenet")]["minus random (paired, 95 %)"]
    delta = records[("mimic-cls", "imagenet")]["metrics"]["auroc_macro"] - records[("mimic-cls", "random")][
        "metrics"]["auroc_macro"]
    assert paired.startswith(f"{delta:+.4f} [")  # the paired difference on the full test set


@pytest.mark.slow
def test_sizes_are_the_task_data(power):
    text, _, results, world = power
    records = _records(results)
    rows = {r["task"]: r for r in _table(text, "Sizes")}
    assert list(rows) == list(TASKS)
    for task in TASKS:
        data = prepare(RunRequest(method="random", task=task, profile="smoke", data_root=str(world),
                                  progress=False)).data
        for split in ("train", "val", "test"):
            part = data.split(split)
            expected = f"{len(part)} ({part.frame['patient_id'].nunique()})"
            assert rows[task][f"{split} images (patients)"] == expected
    scored = {t: r["what the protocol scores"] for t, r in rows.items()}
    rec = records[("mimic-regen", "random")]
    assert scored["mimic-regen"].startswith(f"{rec['details']['n_test']} test images regenerated")
    assert rec["n"]["test"] == int(rows["mimic-regen"]["test images (patients)"].split()[0])
    loc = records.get(("nih14-loc", "random"))
    if loc is not None:  # the protocol's own count of boxed test images and cases
        assert scored["nih14-loc"].startswith(f"{loc['details']['n_images']} test images with a box, "
                                              f"{loc['details']['n_cases']} (image, finding) cases")
    r1k = records.get(("mimic-retrieval-1k", "random"))
    if r1k is not None:
        d = r1k["details"]
        assert f"gallery of {d['n_images']} test images" in scored["mimic-retrieval-1k"]
        assert f"{d['blocks']} block(s) of {d['block_size']} pairs, {d['pairs_outside_blocks']} pairs left out" \
            in scored["mimic-retrieval-1k"]
    else:  # refused by the protocol; the sizes table says why before any run
        assert "(refused: fewer test pairs" in scored["mimic-retrieval-1k"]


@pytest.mark.slow
def test_target_line_and_regeneration_gain(power):
    text, stdout, results, _ = power
    records = _records(results)
    rec = records[("mimic-cls", "imagenet")]
    lo, hi = rec["ci"]["auroc_macro"]
    line, verdict = stdout.splitlines()[0], "PASS" if (hi - lo) / 2 <= TARGET.max_half_width else "FAIL"
    assert line.startswith(f"{verdict}: imagenet on mimic-cls at 100% labels, profile smoke: 95 % CI half-width of "
                           f"auroc_macro = {(hi - lo) / 2:.4f} (target <= 0.02")
    assert "the target is stated for the small profile" in line and line in text
    gains = _table(text, "Regeneration: an informative encoder against random features")
    assert [(g["task"], g["method"]) for g in gains] == [("mimic-regen", "imagenet")]
    gain = gains[0]["gain over random"]
    main_metric = records[("mimic-regen", "random")]["main_metric"]
    if gain.startswith("n/a: "):  # a protocol that keeps no per-unit values cannot be paired, and says so
        assert gains[0]["95 % paired CI"] == ""
    else:  # the paired difference on the full test set is the difference of the records' values
        values = {m: records[("mimic-regen", m)]["metrics"][main_metric] for m in METHODS}
        delta = values["imagenet"] - values["random"]
        assert gain == f"{delta:+.4f}" and re.fullmatch(r"\[[-+]\d+\.\d{4}, [-+]\d+\.\d{4}\]",
                                                         gains[0]["95 % paired CI"])


def _cell(lo: float, hi: float, method: str = "imagenet", task: str = "mimic-cls") -> Cell:
    rec = {"main_metric": "auroc_macro", "metrics": {"auroc_macro": (lo + hi) / 2}, "ci": {"auroc_macro": [lo, hi]},
           "n": {"test": 2000}, "details": {}}
    return Cell(method, task, "done", record=rec)


def test_target_pass_fail_and_not_checked():
    grid = Grid(methods=["imagenet"], tasks=[], cells=[_cell(0.80, 0.83)])
    verdict, line = check_target(grid, "small")
    assert verdict == "PASS" and "half-width of auroc_macro = 0.0150" in line and "stated for" not in line
    grid.cells = [_cell(0.80, 0.85)]
    assert check_target(grid, "small")[0] == "FAIL"
    grid.cells = [_cell(0.80, 0.80 + 2 * TARGET.max_half_width - 1e-9)]  # just inside the target: it holds
    assert check_target(grid, "small")[0] == "PASS"
    assert check_target(grid, "smoke")[1].endswith("(the target is stated for the small profile; this run used smoke)")
    grid.cells = [_cell(0.80, 0.83, method="random")]
    assert check_target(grid, "small")[0] == "NOT CHECKED"
    grid.cells, grid.fraction = [_cell(0.80, 0.83)], 0.1
    assert check_target(grid, "small")[1].startswith("NOT CHECKED: imagenet on mimic-cls at 100% labels: this grid "
                                                     "ran at fraction 0.1")


def test_unknown_method_is_the_registry_error_before_any_run(tmp_path, capsys):
    code = main(["power", "--methods", "random", "imagnet", "--tasks", "mimic-cls", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "p.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["harness: error: unknown method 'imagnet'; did you mean 'imagenet'?"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.md").exists()


def test_unknown_task_is_one_line(tmp_path, capsys):
    code = main(["power", "--methods", "random", "--tasks", "mimic-clss", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mimic-clss" in err[0]


def test_cell_half_width_is_the_record_interval():
    """A cell's CI half-width is the record's interval, a NaN interval is 'not measurable', never 0."""
    cell = _cell(0.5, 0.7)
    assert cell.half_width == pytest.approx(0.1)
    cell.record["ci"]["auroc_macro"] = [float("nan"), float("nan")]
    cell.record["details"] = {"not_measurable": {"ci of auroc_macro": "fewer than 5 patients"}}
    assert cell.half_width is None and cell.ci_missing() == "fewer than 5 patients"


def test_fraction_outside_range_is_one_line_before_any_run(tmp_path, capsys):
    code = main(["power", "--methods", "random", "--tasks", "mimic-cls", "--fraction", "0", "--results",
                 str(tmp_path / "r")])
    assert code == 2 and capsys.readouterr().err.strip() == "harness: error: --fraction must be in (0, 1], got 0.0"
    assert not (tmp_path / "r").exists()
