"""Progress: a tqdm bar on a terminal; elsewhere (Slurm logs, CI, pytest's captured stderr) a few whole lines.

Every progress display of the harness goes through ``harness.progress``; these tests drive the
real call sites (image cache, feature extraction, trainer, synthetic world, job waiting) with
stderr captured, which is not a terminal, and count lines and carriage returns.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from harness.progress import LineProgress, progress

LINE = re.compile(r"^[^\r\n]+: ")


class Clock:
    """A clock the test moves by hand, so that pacing is checked without sleeping."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_tenth_but_at_most_one_per_ten_seconds():
    out, clock = io.StringIO(), Clock()
    bar = progress(10_000, "features (global)", unit="img", file=out, clock=clock)
    assert isinstance(bar, LineProgress)  # a StringIO is no terminal
    for _ in range(10_000):  # 50 img/s: a tenth takes 20 s, so the tenths decide
        clock.t += 0.02
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10, lines  # 1000, 2000, ..., 9000 and the final line
    assert lines[0] == "features (global): 1000/10000 img (10 %), 50.0 img/s, ETA 3m00s"
    assert lines[-1] == "features (global): 10000/10000 img, done in 3m20s (50.0 img/s)"

    out, clock = io.StringIO(), Clock()
    bar = progress(51_200, "image cache 224px", unit="img", file=out, clock=clock)
    for _ in range(51_200):  # 1024 img/s (exact in binary): a tenth every 5 s, but at most one line per 10 s
        clock.t += 1 / 1024
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" img")[0] for line in lines] == [
        "image cache 224px: 10240/51200", "image cache 224px: 20480/51200", "image cache 224px: 30720/51200",
        "image cache 224px: 40960/51200", "image cache 224px: 51200/51200"], lines


def test_a_fast_loop_writes_only_the_final_line_and_a_slow_one_a_heartbeat():
    out, clock = io.StringIO(), Clock()
    with progress(100_000, "image cache 64px", unit="img", file=out, clock=clock) as bar:
        for _ in range(100_000):  # 100,000 updates in 5 s: no line before the final one
            clock.t += 5e-5
            bar.update(1)
    assert out.getvalue().count("\n") == 1 and "100000/100000 img, done in 5s" in out.getvalue()

    out, clock = io.StringIO(), Clock()
    bar = progress(10_000, "moco", unit="step", file=out, clock=clock)
    for step in range(300):  # 300 steps in 300 s: 3 % of the total, so only the 60 s heartbeat writes
        clock.t += 1.0
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines  # 60, 120, 180, 240, 300 s, and the final (early-stop) line
    assert lines[0].startswith("moco: 60/10000 step (1 %), 1.0 step/s, ETA 2h")
    assert lines[-1] == "moco: stopped at 300/10000 step after 5m00s, loss=0.0033"


def test_disabled_writes_nothing_and_unknown_totals_still_log():
    out = io.StringIO()
    bar = progress(10, "quiet", enabled=False, file=out)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    clock = Clock()
    bar = progress(None, "jobs", unit="job", file=out, clock=clock)
    clock.t += 60
    bar.update(3)  # no total: no percentage, no ETA; the heartbeat still writes
    bar.close()
    assert out.getvalue().splitlines() == ["jobs: 3 job, 0.1 job/s", "jobs: 3 job, done in 1m00s (0.1 job/s)"]


def test_a_terminal_gets_a_tqdm_bar():
    from tqdm import tqdm

    leader, follower = os.openpty()  # a real terminal device: isatty() is true
    with os.fdopen(follower, "w") as tty:
        bar = progress(5, "synth mimic", unit="img", file=tty)
        assert isinstance(bar, tqdm)
        bar.update(5)
        bar.close()
    os.close(leader)


class _Tiny(torch.nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 4))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _assert_progress_lines(err: str, prefix: str) -> list[str]:
    assert "\r" not in err, err[:300]
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert lines and all(LINE.match(line) for line in lines), err[:500]
    assert len(lines) <= 11, lines
    return lines


def test_image_cache_and_features_log_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from harness.data.images import image_store
    from harness.encoders.preprocess import Preprocess
    from harness.features import compute_features

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(40):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 20), i * 5, np.uint8), mode="L").save(path)
        paths.append(str(path))
    store = image_store(paths, 16, progress=True)
    [final] = _assert_progress_lines(capsys.readouterr().err, "image cache 16px")
    assert "40/40 img, done in" in final

    encoder = _Tiny()
    feats = compute_features(encoder, store, Preprocess(image_size=16, channels=1, mean=(0.5,), std=(0.25,)),
                             batch_size=8, progress=True)
    assert feats.shape == (40, 4)
    [final] = _assert_progress_lines(capsys.readouterr().err, "features (global)")
    assert "40/40 img, done in" in final


def test_synthetic_world_and_job_wait_log_lines(tmp_path, capsys):
    from harness.dispatch import outcomes
    from harness.synth import write_world

    write_world(tmp_path / "w", sources=("nih14",), scale=0.01, seed=0, progress=True)
    [final] = _assert_progress_lines(capsys.readouterr().err, "synth nih14")
    assert re.search(r"synth nih14: (\d+)/\1 img, done in", final), final

    bar = outcomes._progress_bar(3, "evaluations", True)
    for _ in range(3):
        bar.update(1)
        bar.set_postfix(failed=0)
    bar.close()
    [final] = _assert_progress_lines(capsys.readouterr().err, "evaluations")
    assert re.fullmatch(r"evaluations: 3/3 job, done in 0s \([0-9.]+ job/s\), failed=0", final), final
    outcomes._progress_bar(0, "nothing", True).close()  # no jobs: no display at all
    assert capsys.readouterr().err == ""


def test_trainer_logs_lines(tmp_path, capsys):
    from baselines.common.train import TrainConfig, Trainer

    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, optimizer, TrainConfig(steps=30, log_every=10, checkpoint_every=0), tmp_path / "train",
                      meta={"method": "probe-test"})

    def batch_fn(ctx):
        return torch.randn(4, 4, generator=ctx.generator(0))

    def step_fn(model, batch, ctx):
        return model(batch).pow(2).mean()

    assert Path(trainer.fit(step_fn, batch_fn)).is_file()
    [final] = _assert_progress_lines(capsys.readouterr().err, "probe-test")
    assert re.fullmatch(r"probe-test: 30/30 step, done in \d+s \([0-9.]+ step/s\), loss=\d\.\d{4}", final), final
