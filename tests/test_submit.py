"""Submissions: the example scores like a baseline on every capable task, bad encoders are refused
clearly, image-only encoders never reach retrieval, pickles never run, cards reach the leaderboard."""

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from examples.my_encoder import MyEncoder, build
from harness.catalog import METHODS
from harness.cli import main
from harness.dispatch.runner import RunRequest, execute
from harness.encoders import MethodCard, Preprocess
from harness.encoders.check import check_encoder
from harness.encoders.errors import SubmissionError
from harness.encoders.submission import capable_tasks, ensure_registered, register_plugins, submission_spec
from harness.encoders.weights import load_state_dict
from harness.reporting.leaderboard import render_all
from harness.reporting.reference import suite_world

CAPABLE_HERE = ["mock", "mimic-cls", "mimic-cls-finetune", "mimic-mm-cls", "mimic-regen"]  # mimic-only world


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]


def test_capable_tasks_follow_requires():
    caps = {"image", "trainable"}
    names = {t.name for t in capable_tasks(caps)}
    assert {"mimic-cls", "nih14-cls", "mimic-regen", "mimic-cls-finetune"} <= names
    assert not {n for n in names if "retrieval" in n or "5x200" in n or n.endswith("-loc") or n == "mock"}
    assert {t.name for t in capable_tasks({"image"})} == names - {"mimic-cls-finetune"}
    with pytest.raises(SubmissionError, match=r"lacks capabilities for \['mimic-retrieval'\].*'text'"):
        capable_tasks(caps, ["mock", "mimic-retrieval"])


@pytest.mark.slow
def test_example_submission_scores_on_every_capable_task(tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["-q", "submit", "examples.my_encoder:build", "--name", "my-enc", "--tasks", *CAPABLE_HERE,
                 "--profile", "smoke", "--seeds", "0", "--fractions", "1", "--results", str(results),
                 "--data-root", str(suite_world()), "--save-predictions"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert "my-enc: capabilities ['image', 'trainable']" in out.out
    recs = _records(results)
    assert sorted(r["task"] for r in recs) == sorted(CAPABLE_HERE)
    sha = recs[0]["weights_sha256"]
    for rec in recs:  # labelled with the submission's name and weights hash, scored like a baseline
        assert rec["method"] == "my-enc" and rec["weights_sha256"] == sha and len(sha) == 64
        assert rec["data_source"] == "synthetic" and rec["method_card"]["pretraining_data"] == []
        assert rec["metrics"][rec["main_metric"]] == rec["metrics"][rec["main_metric"]]  # not NaN
    # the leaderboard renders them, with the regeneration grid from the saved predictions
    written, problems = render_all(results, tmp_path / "lb")
    assert problems == [] and (tmp_path / "lb" / "synthetic" / "mimic-regen-my-enc-regeneration.png").is_file()
    assert "mimic-regen-my-enc-regeneration.png" in (tmp_path / "lb" / "synthetic" / "mimic-regen.md").read_text()


def test_image_only_submission_is_not_sent_to_retrieval(tmp_path, capsys):
    assert main(["submit", "examples.my_encoder:build", "--name", "my-enc-2", "--tasks", "mimic-retrieval",
                 "--results", str(tmp_path)]) == 2
    assert "lacks capabilities for ['mimic-retrieval']" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


class Bad(MyEncoder):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def encode_image(self, images):
        out = super().encode_image(images)
        if self.mode == "shape":
            return out[:, :3]
        if self.mode == "nan":
            return out * float("nan")
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "random":
            return out + torch.rand_like(out)
        if self.mode == "batch":
            return out + out.mean(0, keepdim=True)
        if self.mode == "int":
            return out.long()
        return out


@pytest.mark.parametrize("mode, message", [
    ("shape", "must return (4, 32); got (4, 3)"),
    ("nan", "NaN or inf"),
    ("raise", "encode_image raised RuntimeError: boom"),
    ("random", "not deterministic"),
    ("batch", "depends on the other images of the batch"),
    ("int", "returned torch.int64; expected a floating-point tensor"),
])
def test_bad_encoders_are_refused_with_the_reason(mode, message):
    problems = check_encoder(Bad(mode))
    assert any(message in p for p in problems), problems
    assert check_encoder(build()) == []


def test_missing_card_and_bad_text_are_named():
    class NoCard(torch.nn.Module):
        num_features = 4

        def encode_image(self, images):
            return images.mean((2, 3)).repeat(1, 4)

    assert "no `card`" in check_encoder(NoCard())[0]

    class BadText(MyEncoder):
        def encode_text(self, texts):
            return torch.full((len(texts), 8), float("inf"))

    assert check_encoder(BadText()) == ["encode_text must return a finite (B, D) float tensor"]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "weights.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"conv1.weight": Payload()}, fh)
    with pytest.raises(SubmissionError, match="refused: not a plain tensor file"):
        load_state_dict(bad)
    assert main(["submit", "--arch", "resnet18", "--weights", str(bad), "--name", "evil", "--tasks", "mock"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "refused" in err
    assert not marker.exists()


def test_arch_and_timm_weights_from_safetensors(tmp_path, capsys):
    import timm

    net = timm.create_model("test_vit", pretrained=False, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert main(["-q", "submit", "timm:test_vit", "--weights", str(path), "--name", "my-timm-vit", "--tasks", "mock",
                 "--profile", "smoke", "--seeds", "0", "--fractions", "1", "--results", str(tmp_path / "r"),
                 "--pretraining-data", "mock"]) == 0
    assert "[synthetic] my-timm-vit on mock" in capsys.readouterr().out
    [rec] = _records(tmp_path / "r")
    assert rec["method_card"]["pretraining_data"] == ["mock"]
    # an overlapping card is flagged on the leaderboard
    render_all(tmp_path / "r", tmp_path / "lb")
    text = (tmp_path / "lb" / "synthetic" / "mock.md").read_text()
    assert "| my-timm-vit ⚠ |" in text and "pretrained on mock (overlaps this task's evaluation data)" in text
    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(2)}, str(wrong))
    assert main(["submit", "--arch", "resnet18", "--weights", str(wrong), "--name", "bad-r18", "--tasks", "mock"]) == 2
    assert "does not fit torchvision:resnet18" in capsys.readouterr().err


def test_public_encoders_without_local_weights_are_unavailable(capsys):
    assert main(["submit", "timm:resnet50", "--name", "no-weights", "--tasks", "mock"]) == 2
    err = capsys.readouterr().err
    assert "unavailable without local weights" in err and "never downloads" in err
    assert main(["submit", "torchxrayvision:densenet121-res224-all", "--weights", "x.pt", "--name", "xrv",
                 "--tasks", "mock"]) == 2
    assert "x.pt does not exist" in capsys.readouterr().err  # torchxrayvision is installed: the file is what is missing
    assert main(["submit", "timm:no_such_net", "--weights", __file__, "--name", "nn", "--tasks", "mock"]) == 2
    assert "timm has no model 'no_such_net'" in capsys.readouterr().err


def test_run_request_carries_the_submission_to_another_registry_state(tmp_path):
    spec = submission_spec("examples.my_encoder:build")
    assert "carried-enc" not in METHODS
    out = execute(RunRequest(method="carried-enc", task="mock", profile="smoke", results_dir=str(tmp_path),
                             progress=False, submission=spec))  # registered by execute itself, as in a job
    assert out.record["method"] == "carried-enc" and "carried-enc" in METHODS
    ensure_registered("carried-enc", spec)  # idempotent


def leaky_build():
    enc = build()
    enc.card = MethodCard(name="leaky", paper="test", preprocess=Preprocess(64, 1, (0.5,), (0.25,)),
                          pretraining_data=("mock:test",))
    return enc


def test_installed_plugin_is_listed_and_scored(tmp_path, monkeypatch, capsys):
    dist = tmp_path / "site" / "leaky_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[harness.encoders]\nleaky-plugin = tests.test_submit:leaky_build\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    assert "leaky-plugin" in register_plugins() and register_plugins() == []
    assert main(["ls", "methods"]) == 0 and "leaky-plugin" in capsys.readouterr().out
    assert main(["-q", "submit", "leaky-plugin", "--name", "leaky-plugin", "--tasks", "mock", "--profile", "smoke",
                 "--seeds", "0", "--fractions", "1", "--results", str(tmp_path / "r")]) == 0
    render_all(tmp_path / "r", tmp_path / "lb")
    assert "⚠ leaky-plugin: pretrained on mock:test" in (tmp_path / "lb" / "synthetic" / "mock.md").read_text()
