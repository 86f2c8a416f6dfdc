"""The bad-input corpus, submissions: weights files, shapes, input sizes, encoder checks, capabilities,
names, pretraining data, and failing jobs.

Every malformed input is built for real (weights written with ``torch.save`` / safetensors from
tiny timm models and torchvision's resnet18, files cut, renamed, replaced) and goes through
``harness.cli.main``: exit code 2, exactly one ``harness: error:`` line naming the file or field
and what is wrong, no traceback (``tests.corpus.cli_error``). Then the runs that fail after
scoring started: one failing run of ``submit`` or ``sweep`` stops no other, is printed with its
reason and leaves a JSON failure record (``harness.dispatch.failures``) that the leaderboard never reads.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from examples.my_encoder import MyEncoder
from harness.catalog import METHODS
from harness.cli import main
from harness.dispatch import failures
from harness.encoders import IMAGENET_MEAN, IMAGENET_STD, MethodCard, Preprocess
from harness.encoders.errors import SubmissionError
from harness.encoders.provenance import check_pretraining_data
from harness.encoders.submission import SubmissionMethod, refuse_earlier_submission
from harness.reporting.leaderboard import render_all
from harness.results import load_records
from tests.corpus import cli_error, copy_of

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"
RUN = ["--tasks", "mock", "--profile", "smoke", "--seeds", "0", "--fractions", "1"]


# ------------------------------------------------------------------------------------------ weights files


def _timm(name: str = "test_vit", **kw):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0, **kw)


def _state(net) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The good weights of timm:test_vit in both formats, and what the damage cases start from."""
    d = tmp_path_factory.mktemp("weights")
    state = _state(_timm())
    save_file(state, str(d / "good.safetensors"))
    torch.save(state, d / "good.pt")
    torch.save(state, d / "legacy.pt", _use_new_zipfile_serialization=False)
    return {"dir": d, "safetensors": d / "good.safetensors", "pt": d / "good.pt", "legacy": d / "legacy.pt"}


def _put(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _copy(src: Path, dst: Path, cut: float | None = None) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * cut)] if cut else data)
    return dst


def _torchscript(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; users still have such files
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


WEIGHT_CASES = {
    # name: (build the file in tmp from the good ones, the message the line must contain)
    "torch zip named .safetensors": (lambda f, t: _copy(f["pt"], t / "w.safetensors"),
                                     "is not a safetensors file: it is a torch.save zip archive; rename it to .pt"),
    "legacy pickle named .safetensors": (lambda f, t: _copy(f["legacy"], t / "w.safetensors"),
                                         "is not a safetensors file: it is a Python pickle"),
    "html page named .safetensors": (
        lambda f, t: _put(t / "w.safetensors", "<!DOCTYPE html>\n<html><title>Sign in</title></html>\n"),
        "it is an HTML page, not weights (a download that returned a login or error page?)"),
    "safetensors named .pt": (lambda f, t: _copy(f["safetensors"], t / "w.pt"), "is a safetensors file, not the "
                              "torch file its .pt name says; rename it to w.safetensors"),
    "safetensors named .bin": (lambda f, t: _copy(f["safetensors"], t / "pytorch_model.bin"),
                               "rename it to pytorch_model.safetensors"),
    "garbage .pth": (lambda f, t: _put(t / "w.pth", bytes(range(7, 250)) * 3),
                     "is of no known weights format (first bytes 07 08 09 0a)"),
    "git lfs pointer": (lambda f, t: _put(t / "w.bin", "version https://git-lfs.github.com/spec/v1\n"
                                                       "oid sha256:4d7a2146\nsize 1221104\n"),
        "is a Git LFS pointer, not the weights themselves (fetch them with `git lfs pull`)"),
    "empty .pt": (lambda f, t: _put(t / "w.pt", b""), "is empty (0 bytes)"),
    "truncated safetensors": (lambda f, t: _copy(f["safetensors"], t / "w.safetensors", cut=0.5),
                              "is a truncated safetensors file (its header describes"),
    "safetensors cut inside its header": (lambda f, t: _copy(f["safetensors"], t / "w.safetensors", cut=0.002),
                                          "header is cut off at"),
    "truncated torch zip": (lambda f, t: _copy(f["pt"], t / "w.pt", cut=0.5),
                            "is a truncated or damaged zip archive"),
    "truncated legacy pickle": (lambda f, t: _copy(f["legacy"], t / "w.pt", cut=0.5), "is a truncated pickle"),
    "gzipped torch file": (lambda f, t: _put(t / "w.pt", gzip.compress(f["pt"].read_bytes())),
                           "is gzip-compressed (decompress it first)"),
    "numpy npz named .pt": (lambda f, t: np.savez(t / "w.npz", a=np.zeros(3)) or _copy(t / "w.npz", t / "w.pt"),
                            "is a NumPy .npz archive, not weights"),
    "torchscript archive": (lambda f, t: _torchscript(t / "w.pt"), "is a TorchScript archive (torch.jit.save), whose "
                            "loading would run its code; save model.state_dict()"),
    "whole pickled model": (lambda f, t: torch.save(_timm(), t / "w.pt") or t / "w.pt",
                            "refused: not a plain tensor file: it pickles "
                            "timm.models.vision_transformer.VisionTransformer, so loading it would execute code"),
    # a "model" / "state_dict" / "teacher" section is read (tests/test_checkpoints.py); a section of another name
    # cannot be guessed
    "training checkpoint": (lambda f, t: torch.save({"weights_ema": _state(_timm()), "optimizer": {"state": {}},
                                                     "epoch": 3}, t / "w.pt") or t / "w.pt",
                            "expected a state dict of tensors; entry 'weights_ema' is dict; it looks like a training "
                            "checkpoint with sections ['weights_ema', 'optimizer']: pass --checkpoint-key SECTION"),
    "a folder": (lambda f, t: (t / "w.pt").mkdir() or t / "w.pt", "is a folder; pass the weights file inside it"),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_weights_file_that_is_not_what_it_says_is_one_line(case, files, tmp_path, capsys):
    make, message = WEIGHT_CASES[case]
    path = make(files, tmp_path)
    name = "w-" + "".join(c if c.isalnum() else "-" for c in case)
    line = cli_error(["submit", "timm:test_vit", "--weights", str(path), "--name", name, *RUN,
                      "--results", str(tmp_path / "r")], capsys)
    assert str(path) in line and message in line, line
    assert not (tmp_path / "r").exists()


def test_the_good_files_load(files):
    from harness.encoders.weights import load_state_dict

    reference = load_state_dict(files["safetensors"])
    for key in ("pt", "legacy"):  # both torch formats, loaded with weights_only=True
        state = load_state_dict(files[key])
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


# ------------------------------------------------------------------------------------------ shapes and sizes


def test_grey_resnet18_weights_into_the_3_channel_model(tmp_path, capsys):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # trained on 1-channel X-rays
    path = tmp_path / "grey_r18.safetensors"
    save_file(_state(net), str(path))
    line = cli_error(["submit", "--arch", "resnet18", "--weights", str(path), "--name", "grey-r18", *RUN], capsys)
    assert line == (f"harness: error: {path}: does not fit torchvision:resnet18: 1 tensor(s) of another shape: "
                    "conv1.weight is (64, 1, 7, 7) in the file, (64, 3, 7, 7) in the model; the weights take "
                    "1-channel images, the model 3-channel")


def test_weights_of_another_width(tmp_path, capsys):
    path = tmp_path / "wide.safetensors"
    save_file(_state(_timm(embed_dim=96)), str(path))
    line = cli_error(["submit", "timm:test_vit", "--weights", str(path), "--name", "wide-vit", *RUN], capsys)
    assert f"{path}: does not fit timm:test_vit: 78 tensor(s) of another shape: cls_token is (1, 1, 96) in the " \
           "file, (1, 1, 64) in the model;" in line and "(and 75 more)" in line


def test_a_vit_of_a_fixed_size_refuses_the_preprocessing_size(tmp_path, capsys):
    path = tmp_path / "vit3.safetensors"
    save_file(_state(_timm("test_vit3")), str(path))  # built for 160 px, strictly
    # its own size (timm's pretrained_cfg: 160 px) is the default now; another one is refused, naming where it came from
    line = cli_error(["submit", "timm:test_vit3", "--weights", str(path), "--name", "vit3", "--image-size", "224",
                      *RUN, "--results", str(tmp_path / "r")], capsys)
    assert line == ("harness: error: timm:test_vit3 refuses a (1, 3, 224, 224) input, 224 px as --image-size "
                    "says: AssertionError: Input height (224) doesn't match model (160).")


class _Wrapped(torch.nn.Module):
    """A submission wrapping a library model, with a card of its own."""

    def __init__(self, net, preprocess: Preprocess, num_features: int) -> None:
        super().__init__()
        self.card = MethodCard(name="wrapped", paper="test", preprocess=preprocess)
        self.net, self.num_features = net, num_features

    def encode_image(self, images):
        return self.net(images)


def vit_built_for_160_carded_224():
    return _Wrapped(_timm("test_vit3"), Preprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD), 64).eval()


def grey_cnn_carded_3_channels():
    enc = MyEncoder().eval()
    enc.card = MethodCard(name="grey", paper="test", preprocess=Preprocess(64, 3, IMAGENET_MEAN, IMAGENET_STD))
    return enc


@pytest.mark.parametrize("factory, message", [
    ("vit_built_for_160_carded_224", "encode_image raised AssertionError: Input height (224) doesn't match model "
                                     "(160). (on a (4, 3, 224, 224) batch: card.preprocess says 224 px, 3 channel(s))"),
    ("grey_cnn_carded_3_channels", "encode_image raised RuntimeError: Given groups=1, weight of size [16, 1, 3, 3], "
                                   "expected input[4, 3, 64, 64] to have 1 channels, but got 3 channels instead"),
])
def test_an_input_the_submitted_model_refuses_names_the_size(factory, message, capsys):
    line = cli_error(["submit", f"tests.test_bad_inputs_submissions:{factory}", "--name", f"refuses-{factory}",
                      *RUN], capsys)
    assert line.startswith("harness: error: the submitted encoder failed its checks: ") and message in line, line


# ------------------------------------------------------------------------------------------ encoder checks


class _Texts(MyEncoder):
    """MyEncoder (32 global features) with a deterministic text tower of ``text_dim`` features."""

    text_dim = 32

    def encode_text(self, texts):
        return torch.tensor([[float(len(t) % (i + 2)) for i in range(self.text_dim)] for t in texts])


class _Regions(_Texts):
    region_grid = (2, 2)
    region_dim = 8
    joint_space = True

    def encode_image_regions(self, images):
        return self.encode_image(images)[:, None, : self.region_dim].repeat(1, 4, 1)


def text_of_another_size():
    enc = _Texts().eval()
    enc.text_dim = 16
    return enc


def regions_of_another_size_than_text():
    return _Regions().eval()


def num_features_as_text():
    enc = MyEncoder().eval()
    enc.num_features = "32"
    return enc


class _PlainObject:
    """An encoder that is not a torch.nn.Module and offers no weights hash."""

    card = MyEncoder.card
    num_features = 32

    def __init__(self) -> None:
        self.net = MyEncoder().net.eval()

    def encode_image(self, images):
        with torch.no_grad():
            return self.net(images)


def plain_object():
    return _PlainObject()


def factory_that_raises():
    raise ValueError("checkpoint path not set (export MY_ENC_CKPT)")


an_encoder_object = MyEncoder().eval()


def card_with_a_split_typo():
    enc = MyEncoder().eval()
    enc.card = MethodCard(name="typo", paper="test", preprocess=MyEncoder.card.preprocess,
                          pretraining_data=("mimic-cxr:tran",))
    return enc


@pytest.mark.parametrize("factory, message", [
    ("text_of_another_size", "the submitted encoder failed its checks: encode_text returns 16 features but "
                             "encode_image 32 (num_features): image and text must share one space"),
    ("regions_of_another_size_than_text", "the submitted encoder failed its checks: joint_space is claimed but "
                                          "encode_image_regions returns 8 features and encode_text 32"),
    ("num_features_as_text", "the submitted encoder failed its checks: num_features must be a positive int; "
                             "got '32'"),
    ("plain_object", "the submitted encoder failed its checks: cannot hash the weights of _PlainObject"),
    ("factory_that_raises", "building the submitted encoder raised ValueError: checkpoint path not set "
                            "(export MY_ENC_CKPT)"),
    ("an_encoder_object", "'tests.test_bad_inputs_submissions:an_encoder_object' is an encoder object (MyEncoder), "
                          "not a factory: name a zero-argument function that returns it"),
    ("card_with_a_split_typo", "the submitted encoder failed its checks: card.pretraining_data 'mimic-cxr:tran': "
                               "unknown split 'tran'; did you mean 'train'?"),
])
def test_encoder_check_refuses_before_any_job(factory, message, tmp_path, capsys):
    line = cli_error(["submit", f"tests.test_bad_inputs_submissions:{factory}", "--name", f"chk-{factory}",
                      *RUN, "--results", str(tmp_path / "r")], capsys)
    assert message in line, line
    assert not (tmp_path / "r").exists()


def test_the_shared_space_check_matches_what_retrieval_and_grounding_accept():
    from harness.encoders.check import check_encoder

    assert check_encoder(_Texts().eval()) == []  # text of num_features size: retrieval can compare them
    aligned = _Regions().eval()
    aligned.region_dim = 32
    assert check_encoder(aligned) == []
    unclaimed = _Regions().eval()
    unclaimed.joint_space = False  # regions and text without a joint space: no grounding, nothing to refuse
    assert check_encoder(unclaimed) == []


def test_a_module_that_does_not_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_enc.py").write_text("def build(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = cli_error(["submit", "broken_enc:build", "--name", "broken-enc", *RUN], capsys)
    assert line.startswith("harness: error: cannot import 'broken_enc:build': SyntaxError: ")


# ------------------------------------------------------------------------------------------ capabilities


def test_capability_lacking_is_one_line_in_run(capsys):
    line = cli_error(["run", "--method", "moco", "--task", "mimic-retrieval"], capsys)
    assert line == ("harness: error: method 'moco' lacks capability ['text'] required by task 'mimic-retrieval'")


def test_capability_lacking_is_one_line_in_a_dispatched_run_before_any_job(tmp_path, capsys):
    line = cli_error(["run", "--method", "moco", "--task", "mimic-retrieval", "--executor", "local",
                      "--results", str(tmp_path / "r")], capsys)
    assert "method 'moco' lacks capability ['text'] required by task 'mimic-retrieval'" in line
    assert "nothing was submitted" in line and not (tmp_path / "r").exists()


def test_capability_lacking_is_one_line_in_submit(tmp_path, capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", "img-only-loc", "--tasks", "mock", "nih14-loc",
                      "--results", str(tmp_path / "r")], capsys)
    assert "lacks capabilities for ['nih14-loc']: missing {'nih14-loc': ['image_regions', 'localization', 'text']}" \
        in line and not (tmp_path / "r").exists()


def test_capability_lacking_is_one_line_in_sweep(corpus_world, tmp_path, capsys):
    line = cli_error(["sweep", "--methods", "random", "moco", "--tasks", "mock", "mimic-retrieval", "--data-root",
                      str(corpus_world), "--results", str(tmp_path / "r"), "--logs", str(tmp_path / "logs")], capsys)
    assert line == ("harness: error: method 'moco' lacks capability ['text'] required by task 'mimic-retrieval' "
                    "(nothing was submitted: drop those from --methods / --tasks)")
    assert not (tmp_path / "r").exists() and not (tmp_path / "logs").exists()  # random x mock did not run either


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["random", "moco", "msn-ehr"])
def test_a_built_in_method_name_is_refused(name, tmp_path, capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", name, *RUN, "--results", str(tmp_path)],
                     capsys)
    assert line == (f"harness: error: --name {name!r} is a registered method (`harness ls methods`); scoring under "
                    "it would mix this encoder with that method: choose a name of its own")
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("name", ["my enc", "my/enc", "my__enc", ".enc", "é-enc", "x" * 81])
def test_a_name_that_cannot_name_files_is_refused(name, capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", name, *RUN], capsys)
    assert line.startswith(f"harness: error: --name {name!r}: use letters, digits and . + - _")


def other_weights():
    enc = MyEncoder().eval()
    with torch.no_grad():
        enc.net[0].weight.mul_(2)
    return enc


def test_an_earlier_different_submission_keeps_its_name(tmp_path, capsys):
    results = tmp_path / "r"
    assert main(["-q", "submit", "examples.my_encoder:build", "--name", "kept-name", *RUN, "--results",
                 str(results)]) == 0
    [first] = load_records(results)[0]
    # the same encoder again under its name is a rerun, not a clash
    assert main(["-q", "submit", "examples.my_encoder:build", "--name", "kept-name", *RUN, "--results",
                 str(results)]) == 0
    capsys.readouterr()
    # other weights under the same name: refused, naming a record and both hashes
    other = SubmissionMethod("kept-name", other_weights, "tests.test_bad_inputs_submissions:other_weights")
    with pytest.raises(SubmissionError) as err:
        refuse_earlier_submission("kept-name", results, other)
    message = str(err.value)
    assert f"weights sha256 {first['weights_sha256'][:12]} there, {other.weights_sha256()[:12]} here" in message
    assert "submission 'examples.my_encoder:build' there, 'tests.test_bad_inputs_submissions:other_weights' here" \
        in message and "1 record(s) under" in message
    # and through the command line, in a new process (where the name is not registered yet): one line, exit 2
    out = subprocess.run([sys.executable, "-m", "harness", "submit", "tests.test_bad_inputs_submissions:other_weights",
                          "--name", "kept-name", *RUN, "--results", str(results)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("harness: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    assert errors[0].startswith("harness: error: --name 'kept-name' is taken by an earlier, different submission")
    assert [r["weights_sha256"] for r in load_records(results)[0]] == [first["weights_sha256"]]  # nothing added


# ------------------------------------------------------------------------------------------ pretraining data


@pytest.mark.parametrize("value, message", [
    ("mimc-cxr:train", "unknown dataset 'mimc-cxr'; did you mean 'mimic-cxr'?"),
    ("mimic-cxr:tset", "unknown split 'tset'; did you mean 'test'?"),
    ("MIMIC-CXR:test", "unknown dataset 'MIMIC-CXR'; did you mean 'mimic-cxr'?"),
    ("chestx-ray14:test", "'chestx-ray14' is the harness dataset 'nih14'; write nih14:test"),
    ("chexpert:valid", "unknown split 'valid'; did you mean 'val'"),
    ("imagenet-1k:train", "unknown dataset 'imagenet-1k'; did you mean 'imagenet-21k' or 'imagenet'?"),
    ("mimic-cxr:", "unknown split ''; choose from ['train', 'val', 'test', 'all']"),
])
def test_pretraining_data_typo_is_one_line(value, message, files, capsys):
    line = cli_error(["submit", "timm:test_vit", "--weights", str(files["safetensors"]), "--name", "pd-typo",
                      "--pretraining-data", "imagenet:train", value, *RUN], capsys)
    assert line.startswith(f"harness: error: --pretraining-data {value!r}: ") and message in line, line


def test_pretraining_data_with_a_code_submission_is_refused(capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", "pd-code", "--pretraining-data",
                      "mimic-cxr:train", *RUN], capsys)
    assert "--pretraining-data goes with weights files (--weights); a code or plugin submission declares what it " \
           "saw in its card's pretraining_data" in line


def test_valid_pretraining_data_values():
    values = ("mimic-cxr:train", "chexpert:val", "nih14:all", "openi", "imagenet:train", "padchest:all", "unknown")
    assert check_pretraining_data(values, "--pretraining-data") == values


# ------------------------------------------------------------------------------------------ failing jobs


def _failure_file(results: Path, method: str, task: str, seed: int) -> Path:
    """The one failure record of (method, task, seed) under ``results``."""
    found = []
    for path in (results / failures.FAILURES_DIR).rglob("*.json"):
        rec = json.loads(path.read_text())
        if (rec["method"], rec["task"], rec["seed"]) == (method, task, seed):
            found.append(path)
    [path] = found
    return path


def _split_overlap(world: Path, tmp: Path) -> tuple[Path, str]:
    """An NIH-14 root whose official train and test lists share an image (a DataError naming it)."""
    root = copy_of(world, tmp, "nih14")
    image = (root / "nih14" / "test_list.txt").read_text().split()[0]
    with open(root / "nih14" / "train_val_list.txt", "a") as fh:
        fh.write(f"{image}\n")
    return root, image


def test_submit_records_the_failing_run_and_scores_the_others(corpus_world, tmp_path, capsys):
    root, image = _split_overlap(corpus_world, tmp_path)
    results = tmp_path / "r"
    code = main(["-q", "submit", "examples.my_encoder:build", "--name", "one-fails", "--tasks", "mock", "nih14-cls",
                 "--profile", "smoke", "--seeds", "0", "--fractions", "1", "--data-root", str(root),
                 "--results", str(results)])
    out = capsys.readouterr()
    assert code == 1
    assert "[synthetic] one-fails on mock (fraction 1, seed 0)" in out.out  # the other run was scored
    assert "one-fails: 1 run(s) done, 1 failed" in out.out
    reason = f"{root / 'nih14' / 'test_list.txt'}: {image} is also in train_val_list.txt: the official split is " \
             "not disjoint"
    assert f"FAILED nih14-cls (fraction 1, seed 0): {reason}" in out.err  # the user sees the whole message
    record = _failure_file(results, "one-fails", "nih14-cls", 0)
    assert f"FAILED nih14-cls (fraction 1, seed 0): {reason}\n    failure record: {record}" in out.out
    failure = json.loads(record.read_text())
    assert {k: failure[k] for k in ("status", "method", "task", "fraction", "seed", "stage", "error_type",
                                    "expected")} == \
        {"status": "failed", "method": "one-fails", "task": "nih14-cls", "fraction": 1.0, "seed": 0, "stage": "run",
         "error_type": "DataError", "expected": True}
    assert "traceback" not in failure and "Traceback" not in out.err
    # the record is a shared output: the image identifier is redacted there, the rest of the reason kept
    assert image.removesuffix(".png") not in record.read_text()
    assert failure["reason"].endswith("is also in train_val_list.txt: the official split is not disjoint")
    # the leaderboard, regress and skip-existing read results only: one record, no complaint about the failure
    records, problems = load_records(results)
    assert [r["task"] for r in records] == ["mock"] and problems == []
    written, problems = render_all(results, tmp_path / "lb", pictures=False)
    assert [p.name for p in written] == ["mock.md"] and problems == []


class FlakyOnce(MyEncoder):
    """Passes the checks, then raises an unexpected error on the first full batch of one run only."""

    armed = [True]  # class-wide: every run gets a deep copy of the encoder

    def encode_image(self, images):
        if len(images) > 4 and FlakyOnce.armed[0]:
            FlakyOnce.armed[0] = False
            raise ZeroDivisionError("flaky kernel")
        return super().encode_image(images)


def flaky_once():
    enc = FlakyOnce().eval()
    with torch.no_grad():  # weights of its own: features cached for MyEncoder's weights must not be reused
        enc.net[0].bias.add_(0.125)
    return enc


def test_an_unexpected_error_in_one_submitted_run_stops_no_other(tmp_path, capsys):
    results = tmp_path / "r"
    argv = ["-q", "submit", "tests.test_bad_inputs_submissions:flaky_once", "--name", "flaky-once", "--tasks",
            "mock", "--profile", "smoke", "--fractions", "1", "--results", str(results)]
    assert main([*argv, "--seeds", "0", "1"]) == 1
    out = capsys.readouterr()
    assert "flaky-once: 1 run(s) done, 1 failed" in out.out and "flaky-once on mock (fraction 1, seed 1)" in out.out
    assert "FAILED mock (fraction 1, seed 0): ZeroDivisionError: flaky kernel\n    (an unexpected error, probably a " \
           "bug: its traceback is in the failure record)\n    failure record: " in out.out
    assert "Traceback" not in out.err
    record = _failure_file(results, "flaky-once", "mock", 0)
    failure = json.loads(record.read_text())
    assert (failure["error_type"], failure["expected"], failure["reason"]) == \
        ("ZeroDivisionError", False, "ZeroDivisionError: flaky kernel")
    assert failure["traceback"].startswith("Traceback (most recent call last):") and \
        "in encode_image" in failure["traceback"]
    assert [r["seed"] for r in load_records(results)[0]] == [1]
    # the cell succeeds on a rerun: its failure record is gone, the results hold both seeds
    assert main([*argv, "--seeds", "0"]) == 0
    assert not record.exists() and sorted(r["seed"] for r in load_records(results)[0]) == [0, 1]


class _LoadBug:
    """A registered method whose ``load`` has a bug (an unexpected exception in its job)."""

    def __init__(self) -> None:
        self.card = MethodCard(name="test-load-bug", paper="harness tests", preprocess=Preprocess(16, 1, (0.5,),
                                                                                                   (0.5,)))
        self.profiles = {p: {"image_size": 16} for p in ("smoke", "small", "paper")}

    def pretrain(self, request):
        return None

    def load(self, checkpoint, config):
        return {"not": "an encoder"}["encoder"]


class _PretrainBug(_LoadBug):
    """A registered method whose pretraining dies (its evaluations then never run)."""

    def __init__(self) -> None:
        super().__init__()
        self.card = MethodCard(name="test-pretrain-bug", paper="harness tests", preprocess=self.card.preprocess,
                               pretraining_data=("{task}",))

    def pretrain(self, request):
        raise FloatingPointError("loss diverged at step 3")


def test_sweep_records_an_unexpected_failure_and_completes_the_others(corpus_world, tmp_path, capsys):
    for name, method in (("test-load-bug", _LoadBug), ("test-pretrain-bug", _PretrainBug)):
        if name not in METHODS:
            METHODS.add(name, method)
    results = tmp_path / "r"
    code = main(["-q", "sweep", "--methods", "random", "test-load-bug", "test-pretrain-bug", "--tasks", "mock",
                 "--profile", "smoke", "--fractions", "1", "--seeds", "0", "--data-root", str(corpus_world),
                 "--results", str(results), "--logs", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    assert code == 1 and "1 done, 2 failed, 0 skipped" in out
    pre = json.loads(_failure_file(results, "test-pretrain-bug", "mock", 0).read_text())
    assert (pre["stage"], pre["error_type"], pre["expected"]) == ("pretrain", "FloatingPointError", False)
    assert pre["reason"] == "its pretraining job failed: FloatingPointError: loss diverged at step 3" and pre["job_id"]
    assert "raise FloatingPointError" in pre["traceback"]
    record = _failure_file(results, "test-load-bug", "mock", 0)
    assert "FAILED test-load-bug x mock f=1 s=0" in out and "    KeyError: encoder\n    (an unexpected error" in out
    assert f"    failure record: {record}" in out
    failure = json.loads(record.read_text())
    assert (failure["error_type"], failure["expected"], failure["stage"]) == ("KeyError", False, "run")
    assert "return {\"not\": \"an encoder\"}[\"encoder\"]" in failure["traceback"] and failure["log"].endswith(".err")
    [rec] = load_records(results)[0]
    assert rec["method"] == "random" and rec["task"] == "mock"
