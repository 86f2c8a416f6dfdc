"""The bench command end to end in --quick mode, and the pieces it is built from.

Benchmarks are measurements, not timed tests: nothing here asserts a speed, only that every
figure is measured and reported.
"""

import gc
import mmap
import re

import numpy as np
import pytest
import torch

from harness.bench import measure
from harness.bench.fixtures import planted_images, write_mimic_tables
from harness.bench.measure import _status_kb, peak_rss
from harness.cli import main
from harness.data.mimic_cxr import ADAPTER
from harness.encoders import Preprocess
from harness.features import extract_features, extraction_seconds


def _row(report: str, key: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {key} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_quick_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["-q", "bench", "--quick", "--out", str(out)]) == 0
    report = out.read_text()
    assert report.strip() == capsys.readouterr().out.strip()
    assert "Machine:" in report and "thread(s)" in report and "Load average" in report
    assert "**Quick mode**" in report and "**Subset** (quick mode)" in report
    for key in ("P1", "P2", "P3"):  # ratio figures: a positive number and a verdict against the target
        cells = _row(report, key)
        assert float(cells[3].rstrip("x")) > 0 and cells[5] in ("yes", "**no**"), cells
    p2 = _row(report, "P2")[2]
    assert len(re.findall(r"AUROC 0\.\d{4} vs 0\.\d{4}", p2)) == 1
    p4 = _row(report, "P4")
    assert re.fullmatch(r"\d+\.\d s, \d+\.\d\d GB", p4[2]) and p4[5] in ("yes", "**no**")
    assert "NO reports" in report and "37,711 images" in report  # quick: a tenth of MIMIC's 377,110
    assert re.match(r"\d+ s, 2 runs done, 0 refused, 0 failed", _row(report, "P5")[2])
    # P5's per-run rows come from the records' timings, including the new extract_s
    for task in ("mimic-cls", "mock"):
        assert f"| random | {task} | done |" in report
    assert "| feature extraction |" in report and "| pretraining |" in report
    scaling = [line for line in report.splitlines() if re.match(r"\| (extraction|probe|retrieval)", line)]
    assert len(scaling) == 9  # three steps x the quick multiples 1, 2, 4
    assert {line.split("|")[2].strip() for line in scaling} == {"1", "2", "4"}
    assert _row(report, "scaling")[2].count("x time") == 3


def test_mimic_tables_are_read_by_the_adapter(tmp_path):
    counts = write_mimic_tables(tmp_path, scale=0.002, seed=1)
    records = ADAPTER.load(tmp_path, check_files=False, data_source="synthetic")
    frame = records.frame
    assert len(frame) == counts["images"] == 754
    assert frame["study_id"].nunique() == counts["studies"] and frame["patient_id"].nunique() == counts["patients"]
    assert set(frame["split"]) <= {"train", "val", "test"} and records.skipped == {"report missing": 754}
    assert frame["study_datetime"].notna().all()


def test_planted_images_carry_their_labels():
    images, labels = planted_images(200, 32, seed=0)
    assert images.shape == (200, 32, 32) and images.dtype == np.uint8 and labels.shape == (200, 4)
    # the blob brightens the image: positives are brighter on average
    mean = images.reshape(200, -1).mean(1)
    assert mean[labels[:, 0] == 1].mean() > mean[labels[:, 0] == 0].mean()


def _touched_mapping(megabytes: int) -> mmap.mmap:
    """Anonymous memory straight from the kernel, every page written: resident whatever malloc does."""
    region, page = mmap.mmap(-1, megabytes * 2**20), b"\x01" * 2**20
    for _ in range(megabytes):
        region.write(page)
    return region


class _Cycle:
    def __init__(self, megabytes: int) -> None:
        self.region, self.me = _touched_mapping(megabytes), self

    def __del__(self) -> None:
        self.region.close()


def test_peak_rss_sees_a_transient_allocation():
    # Both allocations are mmap'd directly, so the figures do not depend on whether the C allocator
    # keeps freed memory (a 64 MB numpy array can reuse pages a freed 128 MB one left resident).
    _Cycle(128)  # cyclic garbage left by earlier code: freed at the block's start, not inside it
    with peak_rss() as mem:
        gc.collect()  # what an automatic pass may do at any allocation: must free nothing of before's
        start_kb = _status_kb("VmRSS")
        block = _touched_mapping(64)
        live_kb = _status_kb("VmRSS")  # what the block holds while it is alive
        block.close()  # gone before the block ends: only a high-water mark still sees it
    if np.isnan(mem["peak_mb"]):
        pytest.skip("no resettable VmHWM on this platform: peak_rss says NaN (tested below)")
    rss_after_mb, seen = _status_kb("VmRSS") / 1024, (mem, start_kb, live_kb)
    assert live_kb - start_kb >= 60 * 1024, seen  # the kernel counts 64 MB of written pages
    assert mem["peak_mb"] >= live_kb / 1024 - 1, seen  # the peak, not the resident size at the end
    assert 60 <= mem["added_mb"] < 100 and mem["peak_mb"] >= rss_after_mb + 60, seen


def test_peak_rss_is_nan_not_zero_without_a_high_water_mark(monkeypatch):
    monkeypatch.setattr(measure, "_status_kb", lambda field_name: None if field_name == "VmHWM" else 1000)
    with peak_rss() as mem:
        pass
    assert np.isnan(mem["peak_mb"]) and np.isnan(mem["added_mb"])


class _Mean(torch.nn.Module):
    num_features = 1

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


@pytest.mark.parametrize("nested", [False, True])
def test_extraction_seconds_counts_extract_features(tmp_path, nested):
    images = np.zeros((8, 16, 16), np.uint8)
    pp = Preprocess(image_size=16, channels=1, mean=(0.5,), std=(0.5,))
    with extraction_seconds() as outer:
        if nested:
            with extraction_seconds() as inner:
                extract_features(_Mean(), images, pp, cache_key={"weights_sha256": "x"}, cache_root=tmp_path,
                                 progress=False)
            assert inner[0] > 0
        else:
            extract_features(_Mean(), images, pp, cache_key={"weights_sha256": "x"}, cache_root=tmp_path,
                             progress=False)
    assert outer[0] > 0
