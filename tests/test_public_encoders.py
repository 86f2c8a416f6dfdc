"""Public encoders, one command each: every family of the README, built from scratch in its real on-disk
format (``tests/public_formats.py``: tiny random weights), submitted with ``harness submit`` and scored
end to end on a task it is capable of; and each route's features checked against the library's own.

Families: a RAD-DINO-style DINOv2 directory (``hf:``), Hugging Face ViT / Swin / ConvNeXt towers and
CLIP / SigLIP dual encoders, a BiomedCLIP-style open_clip directory (``open_clip:DIR``), a
CheXzero-style OpenAI-CLIP state dict (``open_clip:ARCH --weights``), torchxrayvision (its released
whole-pickled files and every state-dict layout), a facebookresearch/moco checkpoint
(``torchvision:resnet18 --key-prefix module.encoder_q.``), the ConvNeXt routes of timm and
torchvision, and a text-only BERT directory as the image+indication task's text side.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.encoders import capabilities
from harness.encoders.check import check_encoder
from harness.encoders.fingerprint import embedding_fingerprint
from harness.encoders.public import public_encoder
from harness.encoders.public.options import RouteOptions
from harness.reporting.leaderboard import render_all
from tests import public_formats as F
from tests.corpus import cli_error

RUN = ["--profile", "smoke", "--seeds", "0", "--fractions", "1"]


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    return {"rad-dino": F.rad_dino_dir(d), "clip": F.clip_dir(d), "siglip": F.siglip_dir(d), "bert": F.bert_dir(d),
            "biomedclip": F.biomedclip_dir(d), "chexzero": F.chexzero_file(d), "dir": d}


@pytest.fixture(scope="module")
def nih_world(tmp_path_factory) -> Path:
    """An NIH-14 world with enough patients for the localization task's splits (boxes included)."""
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("nih-world")
    write_world(root, scale=0.2, seed=3, sources=("nih14",), progress=False)
    return root


@pytest.fixture(scope="module")
def retrieval_world(tmp_path_factory) -> Path:
    """MIMIC-CXR and OpenI with more than ten test studies each: Recall@10, and so r_mean, is not measurable
    on a gallery of ten or fewer pairs, and the retrieval tasks refuse it there."""
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("retrieval-world")
    write_world(root, scale=0.3, seed=1, sources=("mimic", "openi"), progress=False)
    return root


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("*.json")) if "failed" not in p.parts]


def _submit(argv: list[str], capsys) -> str:
    code = main(["-q", "submit", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return out.out


def _fingerprint_printed(out: str) -> str:
    line = next(ln for ln in out.splitlines() if "embedding fingerprint:" in ln)
    return line.split("embedding fingerprint:")[1].split()[0]


# ------------------------------------------------------------------------------------------ Hugging Face


def test_rad_dino_style_dinov2_directory_scores_with_its_processor(formats, tmp_path, capsys):
    d = formats["rad-dino"]
    out = _submit([f"hf:{d}", "--name", "rad-dino-tiny", "--check", "--tasks", "mock", "--pretraining-data",
                   "mimic-cxr:train"], capsys)
    assert "capabilities ['image', 'image_regions', 'trainable']" in out
    assert "preprocessing: resize 40 bicubic, crop 32, 3 ch, pixels [0, 1], mean (0.5307, 0.5307, 0.5307)" in out
    checked = _fingerprint_printed(out)
    assert not list(tmp_path.rglob("*.json"))  # --check scores nothing
    out = _submit([f"hf:{d}", "--name", "rad-dino-tiny", "--tasks", "mock", *RUN, "--results", str(tmp_path / "r"),
                   "--pretraining-data", "mimic-cxr:train"], capsys)
    [rec] = _records(tmp_path / "r")
    assert rec["method"] == "rad-dino-tiny" and rec["metrics"]["auroc_macro"] == rec["metrics"]["auroc_macro"]
    # the record states the preprocessing used, exactly the processor's, and the fingerprint --check printed
    assert rec["method_card"]["preprocess"] == {"image_size": 32, "channels": 3, "mean": [0.5307] * 3,
                                                "std": [0.2583] * 3, "resize_to": 40, "resize_mode": "bicubic",
                                                "pixel_range": [0.0, 1.0]}
    assert "preprocessor_config.json" in rec["method_card"]["notes"]
    assert rec["embedding_fingerprint"]["sha256"] == checked and rec["config"]["method"]["image_size"] == 40


def test_dinov2_features_are_the_models_pooler_and_patch_tokens(formats):
    from transformers import AutoModel

    enc = public_encoder(f"hf:{formats['rad-dino']}", RouteOptions())
    ref = AutoModel.from_pretrained(formats["rad-dino"], local_files_only=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ref(pixel_values=x)
        assert torch.equal(enc.encode_image(x), out.pooler_output)
        assert torch.equal(enc.encode_image_regions(x), out.last_hidden_state[:, 1:])  # the CLS token left out
    assert enc.region_grid == (4, 4) and enc.num_features == 32 and check_encoder(enc) == []


@pytest.mark.parametrize("kind, grid, preprocess", [
    ("vit", (4, 4), {"image_size": 32, "resize_to": None, "resize_mode": "bilinear", "mean": [0.5] * 3}),
    ("swin", (4, 4), {"image_size": 32, "resize_to": None, "resize_mode": "bicubic"}),  # 8x8 patches, one merge
    ("convnext", (4, 4), {"image_size": 32, "resize_to": 36, "resize_mode": "bicubic"}),  # crop_pct 0.875
])
def test_hf_image_towers(kind, grid, preprocess, tmp_path):
    enc = public_encoder(f"hf:{F.hf_vision_dir(tmp_path, kind)}", RouteOptions())
    assert capabilities(enc) == {"image", "image_regions", "trainable"} and enc.region_grid == grid
    described = enc.card.preprocess.describe()
    assert {k: described[k] for k in preprocess} == preprocess
    assert check_encoder(enc) == []
    with torch.no_grad():
        regions = enc.encode_image_regions(torch.zeros(2, 3, 32, 32))
    assert regions.shape[:2] == (2, grid[0] * grid[1])


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_dual_encoders_share_one_space(kind, formats):
    enc = public_encoder(f"hf:{formats[kind]}", RouteOptions())
    assert capabilities(enc) == {"image", "image_regions", "text", "localization", "trainable"}
    assert check_encoder(enc) == []  # image, regions and text of one size, deterministic, batch-independent
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        texts = enc.encode_text(["small left pleural effusion", "no acute cardiopulmonary process"])
        assert texts.shape == (2, enc.num_features) and enc.encode_image_regions(x).shape == (2, 16, enc.num_features)
        # the global image feature is the model's own get_image_features
        own = enc.net.get_image_features(pixel_values=x)
        assert torch.equal(enc.encode_image(x), getattr(own, "pooler_output", own))
    if kind == "siglip":  # trained with max_length padding: text features do not depend on the batch's lengths
        with torch.no_grad():
            alone = enc.encode_text(["small left pleural effusion"])
        assert torch.allclose(alone, texts[:1], atol=1e-5)


@pytest.mark.slow
def test_clip_directory_scores_on_retrieval(formats, retrieval_world, tmp_path, capsys):
    out = _submit([f"hf:{formats['clip']}", "--name", "clip-tiny", "--tasks", "mimic-retrieval", *RUN,
                   "--data-root", str(retrieval_world), "--results", str(tmp_path / "r")], capsys)
    assert "clip-tiny: capabilities ['image', 'image_regions', 'localization', 'text', 'trainable']" in out
    [rec] = _records(tmp_path / "r")
    assert rec["task"] == "mimic-retrieval" and 0 <= rec["metrics"]["r_mean"] <= 1
    assert rec["embedding_fingerprint"]["text"] is not None  # a dual encoder's text tower is fingerprinted too


def test_text_only_directory_is_refused_with_how_to_use_it(formats, capsys):
    line = cli_error(["submit", f"hf:{formats['bert']}", "--name", "bert-alone", "--tasks", "mock"], capsys)
    assert line == (f"harness: error: hf:{formats['bert']} is a text-only model (BertModel): it has no image side "
                    f"to score; use it as the text side of the image+indication task: `harness submit IMAGE_SPEC "
                    f"--text-model {formats['bert']} --tasks mimic-mm-cls`")


@pytest.mark.slow
def test_text_model_is_the_image_indication_tasks_text_side(formats, corpus_world, tmp_path, capsys):
    _submit([f"hf:{formats['rad-dino']}", "--name", "rad-dino-bert", "--text-model", str(formats["bert"]),
             "--tasks", "mimic-mm-cls", *RUN, "--data-root", str(corpus_world), "--results", str(tmp_path / "r")],
            capsys)
    [rec] = _records(tmp_path / "r")
    assert rec["config"]["protocol_args"]["text_model"] == str(formats["bert"].resolve())
    assert rec["details"]["text_model"] == str(formats["bert"].resolve())  # what the protocol really loaded
    assert json.loads(rec["config"]["method"]["submission"])["text_model"] == "bert"


# ------------------------------------------------------------------------------------------ open_clip


@pytest.mark.slow
def test_biomedclip_style_directory_scores_on_localization(formats, nih_world, tmp_path, capsys):
    out = _submit([f"open_clip:{formats['biomedclip']}", "--name", "biomedclip-tiny", "--tasks", "nih14-loc", *RUN,
                   "--data-root", str(nih_world), "--results", str(tmp_path / "r")], capsys)
    assert "capabilities ['image', 'image_regions', 'localization', 'text', 'trainable']" in out
    [rec] = _records(tmp_path / "r")
    assert rec["task"] == "nih14-loc" and 0 <= rec["metrics"]["pointing_game"] <= 1
    assert "tokenizer: the local BiomedNLP-BiomedBERT-base-uncased-abstract" in rec["method_card"]["notes"]
    assert rec["method_card"]["preprocess"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_biomedclip_features_are_open_clips(formats):
    import open_clip

    enc = public_encoder(f"open_clip:{formats['biomedclip']}", RouteOptions())
    cfg = json.loads((formats["biomedclip"] / "open_clip_config.json").read_text())["model_cfg"]
    local = str(formats["biomedclip"] / "BiomedNLP-BiomedBERT-base-uncased-abstract")
    cfg["text_cfg"]["hf_model_name"] = cfg["text_cfg"]["hf_tokenizer_name"] = local
    ref = open_clip.model.CustomTextCLIP(**cfg).eval()
    ref.load_state_dict(torch.load(formats["biomedclip"] / "open_clip_pytorch_model.bin", weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    tok = open_clip.tokenizer.HFTokenizer(local, context_length=32)
    with torch.no_grad():
        assert torch.equal(enc.encode_image(x), ref.encode_image(x))
        assert torch.equal(enc.encode_text(["cardiomegaly"]), ref.encode_text(tok(["cardiomegaly"])))
    assert enc.region_grid == (2, 2) and check_encoder(enc) == []


@pytest.mark.slow
def test_chexzero_style_openai_clip_state_dict_scores_on_retrieval(formats, retrieval_world, tmp_path, capsys):
    state = torch.load(formats["chexzero"], weights_only=True)
    # OpenAI CLIP's own key names (what CheXzero's torch.save(model.state_dict()) holds)
    assert {"visual.conv1.weight", "visual.class_embedding", "visual.proj", "token_embedding.weight",
            "text_projection", "logit_scale", "visual.transformer.resblocks.0.attn.in_proj_weight",
            "transformer.resblocks.1.mlp.c_proj.weight", "ln_final.weight"} <= set(state)
    argv = [f"open_clip:{F.TINY_OPENAI_CLIP}", "--weights", str(formats["chexzero"]), "--name", "chexzero-tiny",
            "--pixel-range", "0", "255", "--mean", "101.48761", "--std", "83.43944"]  # CheXzero's normalisation
    _submit([*argv, "--tasks", "openi-retrieval", *RUN, "--data-root", str(retrieval_world), "--results",
             str(tmp_path / "r")], capsys)
    [rec] = _records(tmp_path / "r")
    assert rec["task"] == "openi-retrieval" and 0 <= rec["metrics"]["r_mean"] <= 1
    assert rec["method_card"]["preprocess"]["pixel_range"] == [0.0, 255.0]
    assert rec["method_card"]["preprocess"]["mean"] == [101.48761] * 3


def test_chexzero_normalisation_on_raw_pixels(formats):
    from harness.encoders.preprocess import to_model_input

    F.register_tiny_openai_clip(formats["dir"])
    enc = public_encoder(f"open_clip:{F.TINY_OPENAI_CLIP}", RouteOptions(
        weights=str(formats["chexzero"]), preprocess={"pixel_range": [0, 255], "mean": [101.48761], "std": [83.43944]}))
    images = torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8)
    x = to_model_input(images, enc.card.preprocess)
    assert torch.allclose(x[:, 0], (images.float() - 101.48761) / 83.43944, atol=1e-4)


# ------------------------------------------------------------------------------------------ torchxrayvision


def test_xrv_released_file_scores_with_xrv_preprocessing(formats, tmp_path, capsys):
    from harness.encoders.public.preprocessing import describe

    path = F.xrv_pickled_densenet(tmp_path)
    enc = public_encoder("xrv:densenet121-res224-all", RouteOptions(weights=str(path)))
    assert describe(enc.card.preprocess) == "resize 224 bilinear, 1 ch, pixels [-1024, 1024], mean (0.0,), std (1.0,)"
    assert "a whole pickled model (11-class allowlist), read by its module tree" in enc.card.notes
    _submit(["xrv:densenet121-res224-all", "--weights", str(path), "--name", "xrv-all-tiny", "--image-size", "64",
             "--tasks", "mock", *RUN, "--results", str(tmp_path / "r")], capsys)
    [rec] = _records(tmp_path / "r")
    assert rec["method_card"]["preprocess"]["pixel_range"] == [-1024.0, 1024.0] and rec["capabilities"] == [
        "image", "trainable"]


def test_xrv_features_equal_xrvs_own_for_every_state_dict_layout(tmp_path):
    import torchvision
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = xrv.models.DenseNet(weights=None).eval()
    ref.op_threshs = torch.rand(18)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        want = ref.features2(x)
    layouts = {"state dict with op_threshs": ref.state_dict(), "no op_threshs, no classifier":
               {k: v for k, v in ref.state_dict().items() if not k.startswith(("op_", "classifier"))}}
    for i, (what, state) in enumerate(layouts.items()):
        path = tmp_path / f"d{i}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        # weight names, short names, the architecture
        for name in ("densenet121-res224-all", "nih", "densenet121") if i == 0 else ("densenet121-res224-pc",):
            enc = public_encoder(f"torchxrayvision:{name}", RouteOptions(weights=str(path),
                                                                         preprocess={"image_size": 64}))
            with torch.no_grad():
                assert torch.equal(enc.encode_image(x), want), (what, name)
    # the ResNet: the released file's bare torchvision keys, or the xrv module's model.-prefixed ones
    net = torchvision.models.resnet50(weights=None, num_classes=18)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net.eval()
    with torch.no_grad():
        want = torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(
            net.conv1(x))))))))), 1)
    for prefix, extra in (("", {}), ("model.", {"op_threshs": torch.rand(18)})):
        path = tmp_path / f"r{prefix or 'bare'}.pt"
        torch.save({**{prefix + k: v for k, v in net.state_dict().items()}, **extra}, path)
        enc = public_encoder("xrv:resnet50-res512-all", RouteOptions(weights=str(path), preprocess={"image_size": 64}))
        assert enc.card.preprocess.channels == 1 and enc.num_features == 2048
        with torch.no_grad():
            assert torch.equal(enc.encode_image(x), want)


def test_xrv_default_resolution_follows_the_weights(tmp_path):
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    path = tmp_path / "d.safetensors"
    save_file({k: v.contiguous() for k, v in xrv.models.DenseNet(weights=None).state_dict().items()}, str(path))
    enc = public_encoder("xrv:densenet121-res224-chex", RouteOptions(weights=str(path)))
    assert (enc.card.preprocess.image_size, enc.card.preprocess.pixel_range) == (224, (-1024.0, 1024.0))


# ------------------------------------------------------------------------------------ checkpoints of other codebases


def test_moco_checkpoint_of_another_codebase_scores(tmp_path, capsys):
    import torchvision

    path = F.moco_checkpoint(tmp_path)
    line = cli_error(["submit", "torchvision:resnet18", "--weights", str(path), "--name", "moco-noprefix",
                      "--tasks", "mock"], capsys)
    assert "the keys fit after removing 'encoder_q.' or 'encoder_k.': pass --key-prefix" in line
    _submit(["torchvision:resnet18", "--weights", str(path), "--key-prefix", "module.encoder_q.", "--name",
             "moco-r18", "--pretraining-data", "imagenet:train", "--image-size", "72", "--crop-size", "64",
             "--tasks", "mock", *RUN, "--results", str(tmp_path / "r")], capsys)
    [rec] = _records(tmp_path / "r")
    assert "keys under 'module.encoder_q.' (124 of 250 tensors)" in rec["method_card"]["notes"]
    assert "dropped 4 tensor(s) of fc" in rec["method_card"]["notes"]  # MoCo v2's MLP head
    assert (rec["method_card"]["preprocess"]["resize_to"], rec["method_card"]["preprocess"]["image_size"]) == (72, 64)
    # the feature is the query encoder's pooled feature, and the default preprocessing torchvision's eval transform
    state = torch.load(path, weights_only=True)["state_dict"]
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = torch.nn.Identity()
    ref.load_state_dict({k[len("module.encoder_q."):]: v for k, v in state.items()
                         if k.startswith("module.encoder_q.") and ".fc." not in k})
    enc = public_encoder("torchvision:resnet18", RouteOptions(weights=str(path), key_prefix="module.encoder_q."))
    assert (enc.card.preprocess.resize_to, enc.card.preprocess.image_size) == (256, 224)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(enc.encode_image(x), ref.eval()(x))


def test_timm_convnext_keeps_its_head_norm(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = timm.create_model("test_convnext", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        full.head.norm.weight.mul_(3.0)  # the head's LayerNorm must be the file's, not a fresh one
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    enc = public_encoder("timm:test_convnext", RouteOptions(weights=str(path)))
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x), full.forward_head(full.forward_features(x), pre_logits=True))
    assert "dropped 2 tensor(s) of head.fc" in enc.card.notes
    assert enc.card.preprocess.describe()["resize_to"] == 168  # timm's crop_pct 0.95 at 160 px


def test_torchvision_convnext_keeps_its_classifier_norm(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = torchvision.models.convnext_tiny(weights=None).eval()
    path = tmp_path / "convnext_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    enc = public_encoder("torchvision:convnext_tiny", RouteOptions(weights=str(path), preprocess={"image_size": 64}))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = full.classifier[1](full.classifier[0](full.avgpool(full.features(x))))  # LayerNorm2d, Flatten
        assert torch.equal(enc.encode_image(x), want) and enc.num_features == 768


def test_deep_copies_are_whole_models(formats):
    """Fine-tuning trains a deep copy: its methods must use the copy's weights, not the original's."""
    enc = public_encoder(f"hf:{formats['rad-dino']}", RouteOptions())
    twin = copy.deepcopy(enc)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(twin.encode_image(x), enc.encode_image(x))
    assert embedding_fingerprint(enc) == embedding_fingerprint(copy.deepcopy(enc))


def test_leaderboard_of_public_encoders(formats, tmp_path, capsys):
    """A weights route's --pretraining-data reaches the leaderboard's flag, like a card's."""
    _submit([f"hf:{formats['rad-dino']}", "--name", "rad-dino-leaky", "--tasks", "mock", *RUN, "--results",
             str(tmp_path / "r"), "--pretraining-data", "mock:all"], capsys)
    render_all(tmp_path / "r", tmp_path / "lb")
    assert "| rad-dino-leaky ⚠ |" in (tmp_path / "lb" / "synthetic" / "mock.md").read_text()


def test_directory_specs_travel_as_absolute_paths(formats, monkeypatch):
    """A job started in another folder finds the directory; the identity names the model, not where it lies."""
    from harness.encoders.submission import submission_identity, submission_spec

    monkeypatch.chdir(formats["dir"])
    spec = submission_spec("hf:rad-dino")
    assert json.loads(spec)["arch"] == f"hf:{formats['rad-dino'].resolve()}"
    assert json.loads(submission_identity(spec)) == {"arch": "hf:rad-dino", "pretraining_data": []}
