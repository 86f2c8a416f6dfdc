"""Submissions: the example scores like a baseline, bad encoders are refused clearly, pickles never run."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from examples.my_encoder import MyEncoder, build
from harness.cli import main
from harness.submit import SubmissionError, check_encoder, load_state_dict


def test_example_submission_scores_on_mock_like_a_baseline(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["-q", "submit", "examples.my_encoder:build", "--name", "my-enc", "--tasks", "mock", "--profile",
                 "smoke", "--seeds", "0", "--fractions", "1", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "my-enc: capabilities ['image', 'trainable']" in out and "[synthetic] my-enc on mock" in out
    [path] = list(results.rglob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["method"] == "my-enc" and len(rec["weights_sha256"]) == 64 and 0 <= rec["metrics"]["auroc_macro"] <= 1


def test_image_only_submission_is_not_sent_to_retrieval(capsys):
    assert main(["submit", "examples.my_encoder:build", "--name", "my-enc-2", "--tasks", "mimic-retrieval"]) == 2
    assert "lacks capabilities for ['mimic-retrieval']" in capsys.readouterr().err


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
        return out


@pytest.mark.parametrize("mode, message", [
    ("shape", "must return (B, num_features) = (4, 32); got (4, 3)"),
    ("nan", "NaN or inf"),
    ("raise", "encode_image raised RuntimeError: boom"),
    ("random", "not deterministic"),
    ("batch", "depends on the other images of the batch"),
])
def test_bad_encoders_are_refused_with_the_reason(mode, message):
    problems = check_encoder(Bad(mode))
    assert any(message in p for p in problems), problems
    assert check_encoder(build()) == []


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "weights.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"conv.weight": Payload()}, fh)
    with pytest.raises(SubmissionError, match="refused: not a plain tensor file"):
        load_state_dict(bad)
    assert not marker.exists()


def test_arch_weights_from_safetensors(tmp_path, capsys):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert main(["-q", "submit", "--arch", "resnet18", "--weights", str(path), "--name", "my-r18", "--tasks", "mock",
                 "--profile", "smoke", "--seeds", "0", "--fractions", "1", "--results", str(tmp_path / "r")]) == 0
    assert "[synthetic] my-r18 on mock" in capsys.readouterr().out
    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(2)}, str(wrong))
    assert main(["submit", "--arch", "resnet18", "--weights", str(wrong), "--name", "bad-r18", "--tasks", "mock"]) == 2
    assert "does not fit resnet18" in capsys.readouterr().err
