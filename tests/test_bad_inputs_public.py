"""The bad-input corpus, public encoders: model directories, processor configs, open_clip layouts,
torchxrayvision names, preprocessing options, text models, pretraining manifests and convert-weights.

Every case is built for real (a directory saved with ``save_pretrained`` and then damaged, a config
file edited, a manifest written) and goes through ``harness.cli.main``: exit code 2 and exactly one
``harness: error:`` line naming the file or option and what is wrong (``tests.corpus.cli_error``);
nothing is scored and no record is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests import public_formats as F
from tests.corpus import cli_error

RUN = ["--tasks", "mock", "--profile", "smoke", "--seeds", "0", "--fractions", "1"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("good")
    return {"vit": F.hf_vision_dir(d, "vit"), "clip": F.clip_dir(d), "bert": F.bert_dir(d),
            "biomedclip": F.biomedclip_dir(d), "dir": d}


def _name(prefix: str, case: str) -> str:
    """A submission name of its own per case (names are registered once per process)."""
    return f"{prefix}-" + "".join(c if c.isalnum() else "-" for c in case)[:60]


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _processor(d: Path) -> Path:
    return d / "preprocessor_config.json"


def _drop_tensor(d: Path, key: str) -> None:
    state = load_file(str(d / "model.safetensors"))
    del state[key]
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


HF_CASES = {
    # name: (damage the copy of a good ViT directory, the message the line must contain)
    "no config.json": (lambda d: (d / "config.json").unlink(), "no config.json there: not a transformers model "
                       "directory (what save_pretrained writes)"),
    "custom code": (lambda d: _edit_json(d / "config.json", auto_map={"AutoModel": "modeling_x.XModel"}),
                    "asks for custom model code (auto_map ['AutoModel']); refused: the harness runs no code from model "
                    "directories"),
    "no weights file": (lambda d: (d / "model.safetensors").unlink(), "no weights file (model.safetensors or "
                        "pytorch_model.bin); the harness never downloads weights"),
    "weights are a git lfs pointer": (
        lambda d: (d / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"
                                                       "size 345\n"),
        "model.safetensors is not a safetensors file: it is a Git LFS pointer, not the weights themselves (fetch "
        "them with `git lfs pull`)"),
    "weights lack a layer": (lambda d: _drop_tensor(d, "encoder.layer.1.output.dense.weight"),
                             "the weights do not fit ViTModel: 1 key(s) missing ["),  # named as transformers does
    "no processor config": (lambda d: _processor(d).unlink(), "no image processor config (preprocessor_config.json or "
                            "processor_config.json): its preprocessing is unknown; pass --image-size, --mean and "
                            "--std (the harness never assumes ImageNet's)"),
    "lanczos resize": (lambda d: _edit_json(_processor(d), resample=1),
                       "preprocessor_config.json: resample 1 (lanczos) is not supported (0 nearest, 2 bilinear, 3 "
                       "bicubic); pass --resize-mode bilinear|bicubic|nearest to choose one"),
    "non-square size": (lambda d: _edit_json(_processor(d), size={"height": 32, "width": 48}),
                        "preprocessor_config.json: size 32x48 is not square; the harness feeds square images"),
    "padding": (lambda d: _edit_json(_processor(d), do_pad=True), "do_pad is true: padding is not reproduced"),
    "normalize without stats": (lambda d: _edit_json(_processor(d), image_mean=None),
                                "do_normalize is true but image_mean / image_std are not set"),
    "processor config not json": (lambda d: _processor(d).write_text("{'size': 224,"),
                                  "preprocessor_config.json: not readable JSON (JSONDecodeError"),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_directory_problems_are_one_line(case, good, tmp_path, capsys):
    damage, message = HF_CASES[case]
    d = _copy(good["vit"], tmp_path)
    damage(d)
    line = cli_error(["submit", f"hf:{d}", "--name", _name("hf", case), *RUN, "--results", str(tmp_path / "r")],
                     capsys)
    assert message in line and str(d) in line, line
    assert not (tmp_path / "r").exists()


def test_a_lanczos_processor_scores_once_a_resize_mode_is_chosen(good, tmp_path, capsys):
    from harness.encoders.public import public_encoder
    from harness.encoders.public.options import RouteOptions

    d = _copy(good["vit"], tmp_path)
    _edit_json(_processor(d), resample=1)
    enc = public_encoder(f"hf:{d}", RouteOptions(preprocess={"resize_mode": "bicubic"}))
    assert enc.card.preprocess.resize_mode == "bicubic"


@pytest.mark.parametrize("argv, message", [
    (["--weights", "w.pt"], "the directory's own weights are loaded; --weights is for timm:, torchvision:, "
                            "torchxrayvision: and open_clip:ARCH"),
    (["--key-prefix", "module."], "--checkpoint-key and --key-prefix are for weights files; a model directory is "
                                  "loaded as it was saved"),
    (["--crop-size", "64"], "--crop-size 64 is larger than the image size 32 it is cut from (--image-size)"),
    (["--mean", "0.5", "0.5"], "mean [0.5, 0.5] has 2 values for a 3-channel model; pass --mean with 3 value(s)"),
    (["--std", "0"], "std must be positive, got (0.0, 0.0, 0.0)"),
    (["--pixel-range", "1", "0"], "pixel_range must be (low, high) with low < high, got (1.0, 0.0)"),
])
def test_route_options_out_of_range_are_one_line(argv, message, good, capsys):
    line = cli_error(["submit", f"hf:{good['vit']}", "--name", _name("opt", "".join(argv)), *argv, *RUN], capsys)
    assert message in line, line


def test_channels_change_needs_per_channel_statistics(tmp_path, capsys):
    import torchvision

    path = tmp_path / "r.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()},
              str(path))
    line = cli_error(["submit", "torchvision:resnet18", "--weights", str(path), "--channels", "1", "--name",
                      "grey-stats", *RUN], capsys)
    assert line == ("harness: error: submit: --channels 1: the architecture's mean [0.485, 0.456, 0.406] and std "
                    "[0.229, 0.224, 0.225] are per colour channel; pass --mean and --std for 1 channel(s)")


def test_preprocessing_options_with_a_code_submission(capsys):
    line = cli_error(["submit", "examples.my_encoder:build", "--name", "code-pre", "--image-size", "96", *RUN], capsys)
    assert line == ("harness: error: --image-size go(es) with public encoders (timm:, torchvision:, torchxrayvision:, "
                    "hf:, open_clip:); a code or plugin submission declares its preprocessing in its card")


def test_dual_encoder_without_tokenizer(good, tmp_path, capsys):
    d = _copy(good["clip"], tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    line = cli_error(["submit", f"hf:{d}", "--name", "clip-notok", *RUN, "--results", str(tmp_path / "r")], capsys)
    # transformers would build an empty tokenizer here and the text tower would score nonsense
    assert line == (f"harness: error: hf:{d}: a dual encoder without a usable tokenizer there (none of tokenizer.json, "
                    "vocab.json, vocab.txt, spiece.model, sentencepiece.bpe.model, tokenizer.model): its text tower "
                    "cannot be scored; save the tokenizer into the directory (tokenizer.save_pretrained)")


# ------------------------------------------------------------------------------------------ open_clip, xrv


@pytest.mark.parametrize("case, damage, message", [
    ("no config", lambda d: (d / "open_clip_config.json").unlink(),
     "no open_clip_config.json there (open_clip's local model layout: open_clip_config.json + "
     "open_clip_pytorch_model.bin)"),
    ("text tower without tokenizer", lambda d: (d / "BiomedNLP-BiomedBERT-base-uncased-abstract" / "tokenizer.json"
                                                ).unlink(), "has no tokenizer (none of tokenizer.json, vocab.json"),
    ("text tower not local", lambda d: shutil.rmtree(d / "BiomedNLP-BiomedBERT-base-uncased-abstract"),
     "its text tower is the Hugging Face model 'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract', which must be "
     "local: put its config.json and tokenizer files in"),
    ("no weights", lambda d: (d / "open_clip_pytorch_model.bin").unlink(),
     "no weights file there (open_clip_model.safetensors, open_clip_pytorch_model.safetensors, "
     "open_clip_pytorch_model.bin, open_clip_pytorch_model.pth); pass --weights FILE"),
    ("config without text_cfg", lambda d: _edit_json(d / "open_clip_config.json", model_cfg={"embed_dim": 16,
                                                                                          "vision_cfg": {}}),
     "open_clip_config.json: model_cfg has no 'text_cfg'"),
    ("weights of another model", lambda d: torch.save({"visual.x": torch.zeros(1)}, d / "open_clip_pytorch_model.bin"),
     "does not fit open_clip:"),
])
def test_open_clip_directory_problems_are_one_line(case, damage, message, good, tmp_path, capsys):
    d = _copy(good["biomedclip"], tmp_path)
    damage(d)
    line = cli_error(["submit", f"open_clip:{d}", "--name", _name("oc", case), *RUN], capsys)
    assert message in line, line


@pytest.mark.parametrize("spec, message", [
    ("open_clip:ViT-B-33", "open_clip has no architecture 'ViT-B-33'; did you mean 'ViT-B-32'"),
    ("open_clip:/no/such/dir", "open_clip:/no/such/dir: no such directory (nor an open_clip architecture)"),
    ("xrv:densenet121-res224-al", "torchxrayvision has no model 'densenet121-res224-al'; did you mean "
                                  "'densenet121-res224-all'"),
    ("hf:/no/such/dir", "hf:/no/such/dir: no such directory"),
])
def test_unknown_models_are_one_line(spec, message, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights))
    argv = [] if spec.startswith("hf:") else ["--weights", str(weights)]
    line = cli_error(["submit", spec, *argv, "--name", _name("unknown", spec), *RUN], capsys)
    assert message in line, line


# ------------------------------------------------------------------------------------------ text model


def test_text_model_problems_are_one_line(good, tmp_path, capsys):
    d = _copy(good["bert"], tmp_path)
    (d / "tokenizer.json").unlink()
    line = cli_error(["submit", f"hf:{good['vit']}", "--text-model", str(d), "--name", "tm-notok", *RUN], capsys)
    assert line == (f"harness: error: --text-model {d}: no tokenizer.json in {d} (save the fast tokenizer with "
                    "tokenizer.save_pretrained)")
    line = cli_error(["submit", f"hf:{good['vit']}", "--text-model", str(good["bert"]), "--name", "tm-notask", *RUN],
                     capsys)
    assert line == ("harness: error: --text-model is the text side of the image+indication task; none of ['mock'] "
                    "takes a text model (add --tasks mimic-mm-cls)")
    one_segment = _copy(good["bert"], tmp_path / "one")
    _edit_json(one_segment / "config.json", type_vocab_size=1)
    line = cli_error(["submit", f"hf:{good['vit']}", "--text-model", str(one_segment), "--name", "tm-oneseg", *RUN],
                     capsys)
    assert line == (f"harness: error: --text-model {one_segment}: 'bert' has no second segment embedding "
                    "(type_vocab_size < 2): the image+indication task needs a BERT-style model")


# ------------------------------------------------------------------------------------------ manifests


def _mock_ids() -> dict[str, list[str]]:
    """The mock task's image and patient ids per split (what a manifest of it would list)."""
    from harness.dispatch.runner import RunRequest, prepare

    data = prepare(RunRequest(method="random", task="mock", profile="smoke", progress=False)).data
    return {s: data.split(s).frame[["image_id", "patient_id"]].astype(str).values.tolist()
            for s in ("train", "val", "test")}


@pytest.mark.parametrize("case, content, message", [
    ("missing", None, "does not exist"),
    ("empty", "# nothing yet\n\n", "holds no ids (one image, study or patient id per line, or a CSV with an "
                                   "image_id / study_id / patient_id column)"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file"),
    ("csv without an id column", "name,age\nalice,3\n", "line 1 'name,age' names no id column"),
    ("ids of another dataset", "p10000032\np10000033\n", "none of its 2 ids is an image, study or patient id of the "
                                                         "data of ['mock']"),
])
def test_manifest_problems_are_one_line(case, content, message, good, tmp_path, capsys):
    path = tmp_path / "manifest.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = cli_error(["submit", f"hf:{good['vit']}", "--name", _name("man", case), "--pretraining-manifest", str(path),
                      *RUN,
                      "--results", str(tmp_path / "r")], capsys)
    assert f"--pretraining-manifest {path}" in line and message in line, line
    assert not list((tmp_path / "r").rglob("*.json")) if (tmp_path / "r").exists() else True


def test_manifest_overlap_is_refused_without_allow_overlap(good, tmp_path, capsys):
    ids = _mock_ids()
    path = tmp_path / "pretrained_on.csv"
    path.write_text("image_id\n" + "\n".join(i for i, _ in ids["test"][:5] + ids["train"]) + "\n")
    line = cli_error(["submit", f"hf:{good['vit']}", "--name", "man-leak", "--pretraining-manifest", str(path), *RUN,
                      "--results", str(tmp_path / "r")], capsys)
    n_test = len({p for _, p in ids["test"]})
    seen = len({p for i, p in ids["test"][:5]})
    assert line == (f"harness: error: --pretraining-manifest {path}: the weights were trained on 0 of the "
                    f"{len({p for _, p in ids['val']})} validation and {seen} of the {n_test} test patients of mock: "
                    "its scores would be inflated; pass --allow-overlap to score it anyway (the record and the "
                    "leaderboard row then say so)")
    assert not (tmp_path / "r").exists()
    line = cli_error(["submit", f"hf:{good['vit']}", "--name", "man-allow", "--allow-overlap", *RUN], capsys)
    assert line == ("harness: error: --allow-overlap goes with --pretraining-manifest FILE (it allows what the "
                    "manifest's overlap would refuse)")


# ------------------------------------------------------------------------------------------ convert-weights


def test_convert_weights_problems_are_one_line(tmp_path, capsys):
    (tmp_path / "page.pt").write_text("<!DOCTYPE html><html>sign in</html>")
    line = cli_error(["convert-weights", str(tmp_path / "page.pt"), "--out", str(tmp_path / "o.safetensors")], capsys)
    assert line == (f"harness: error: weights file {tmp_path / 'page.pt'} is an HTML page, not weights (a download "
                    "that returned a login or error page?)")
    line = cli_error(["convert-weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o.safetensors")], capsys)
    assert line == f"harness: error: weights file {tmp_path / 'none.pt'} does not exist"
    assert not (tmp_path / "o.safetensors").exists()
