"""Tiny random-weight public encoders, written in exactly the formats their families use on disk.

Each builder writes one format from scratch under a given folder and returns its path:

- ``rad_dino_dir``: a Hugging Face DINOv2 directory as RAD-DINO's repository holds it
  (``Dinov2Model.save_pretrained`` + a ``BitImageProcessor`` config: shortest edge, centre
  crop, bicubic, its own grey mean / std);
- ``hf_vision_dir``: ViT / Swin / ConvNeXt directories (``save_pretrained`` + their processors);
- ``clip_dir`` / ``siglip_dir``: ``CLIPModel`` / ``SiglipModel`` directories with a tokenizer;
- ``bert_dir``: a BERT-style text model with its fast tokenizer (a text-only directory);
- ``biomedclip_dir``: open_clip's local layout as BiomedCLIP's repository holds it
  (``open_clip_config.json`` with a timm ViT image tower and a Hugging Face BERT text tower,
  ``open_clip_pytorch_model.bin``), the text tower's config and tokenizer in a folder named like
  the Hugging Face model;
- ``chexzero_file``: an OpenAI-CLIP-layout state dict (``torch.save(model.state_dict())``, as
  CheXzero saves it) of a tiny QuickGELU ViT CLIP whose open_clip config is registered as
  ``TINY_OPENAI_CLIP`` (the CheXzero route is ``open_clip:ViT-B-32-quickgelu``; the tiny one keeps
  tests fast and the keys identical);
- ``xrv_pickled_densenet``: a torchxrayvision DenseNet saved whole (``torch.save(model)``), the
  layout of torchxrayvision's released weight files;
- ``moco_checkpoint``: facebookresearch/moco's ``checkpoint_NNNN.pth.tar`` (``epoch``, ``arch``,
  ``state_dict`` with ``module.encoder_q.*``, ``module.encoder_k.*``, the MLP heads, ``queue``,
  ``queue_ptr``; ``optimizer``) of a torchvision ResNet;
- ``lightning_checkpoint`` / ``dino_checkpoint``: a Lightning ``.ckpt`` (``state_dict`` under the
  LightningModule's ``model.`` attribute, ``hyper_parameters`` an ``AttributeDict``) and DINO's
  ``checkpoint.pth`` (``student`` / ``teacher`` with ``backbone.`` and ``head.``, ``args`` an
  ``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("no acute cardiopulmonary process small left right pleural effusion cardiomegaly clear lungs there is "
         "atelectasis consolidation edema pneumothorax nodule mass the heart size normal upper lobe")
TINY_OPENAI_CLIP = "tiny-vit-quickgelu"  # registered in open_clip by chexzero_file


class AttributeDict(dict):
    """A stand-in for Lightning's ``AttributeDict`` (a dict subclass pickled by its class name)."""


def _tokenizer(size: int = 120):
    from harness.text import fast_tokenizer, wordpiece_tokenizer

    return fast_tokenizer(wordpiece_tokenizer([WORDS, WORDS.upper()], size))


def _quiet():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def rad_dino_dir(root: Path) -> Path:
    """RAD-DINO's layout: Dinov2Model + BitImageProcessor (shortest_edge 40, crop 32, bicubic, grey stats)."""
    import transformers as T

    _quiet()
    d = root / "rad-dino"
    torch.manual_seed(0)
    T.Dinov2Model(T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                 image_size=32, patch_size=8)).save_pretrained(d)
    T.BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                        resample=3, image_mean=[0.5307] * 3, image_std=[0.2583] * 3).save_pretrained(d)
    return d


def hf_vision_dir(root: Path, kind: str) -> Path:
    """A ViT, Swin or ConvNeXt directory with its image processor."""
    import transformers as T

    _quiet()
    d = root / kind
    torch.manual_seed(0)
    if kind == "vit":
        model = T.ViTModel(T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, image_size=32, patch_size=8))
        proc = T.ViTImageProcessor(size={"height": 32, "width": 32})
    elif kind == "swin":
        model = T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                         window_size=4))
        proc = T.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3)
    else:
        model = T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32))
        proc = T.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


def _text_cfg(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)


def clip_dir(root: Path) -> Path:
    """A CLIPModel directory (processor_config.json, as transformers 5 saves a CLIPProcessor) with a tokenizer."""
    import transformers as T

    _quiet()
    d, tok = root / "clip", _tokenizer()
    torch.manual_seed(0)
    cfg = T.CLIPConfig(text_config=_text_cfg(tok), projection_dim=16,
                       vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, image_size=32, patch_size=8))
    T.CLIPModel(cfg).save_pretrained(d)
    image = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    T.CLIPProcessor(image_processor=image, tokenizer=tok).save_pretrained(d)
    return d


def siglip_dir(root: Path) -> Path:
    """A SiglipModel directory with its image processor and a tokenizer."""
    import transformers as T

    _quiet()
    d, tok = root / "siglip", _tokenizer()
    torch.manual_seed(0)
    cfg = T.SiglipConfig(text_config=_text_cfg(tok), vision_config=dict(hidden_size=32, num_hidden_layers=2,
                                                                       num_attention_heads=2, intermediate_size=64,
                                                                       image_size=32, patch_size=8))
    T.SiglipModel(cfg).save_pretrained(d)
    T.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def bert_dir(root: Path, name: str = "bert") -> Path:
    """A BERT-style text encoder with its fast tokenizer (what a text-only directory holds)."""
    import transformers as T

    _quiet()
    d, tok = root / name, _tokenizer()
    torch.manual_seed(0)
    T.BertModel(T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
                ).save_pretrained(d)
    tok.save_pretrained(d)
    return d


BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


def biomedclip_dir(root: Path) -> Path:
    """open_clip's local layout as BiomedCLIP's repository holds it (see the module docstring)."""
    from open_clip.model import CustomTextCLIP

    d = root / "biomedclip"
    d.mkdir(parents=True)
    text = bert_dir(d, BIOMEDBERT.split("/")[-1])
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                                "timm_proj": "linear", "image_size": 32},
                 "text_cfg": {"hf_model_name": BIOMEDBERT, "hf_tokenizer_name": BIOMEDBERT, "hf_proj_type": "mlp",
                              "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}}
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }, indent=2))
    build = json.loads(json.dumps(model_cfg))
    build["text_cfg"]["hf_model_name"] = build["text_cfg"]["hf_tokenizer_name"] = str(text)
    torch.manual_seed(0)
    model = CustomTextCLIP(**build)
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


def register_tiny_openai_clip(root: Path) -> str:
    """Register ``TINY_OPENAI_CLIP`` (a 2-layer QuickGELU ViT CLIP, OpenAI's layout) with open_clip."""
    import open_clip

    cfg = root / f"{TINY_OPENAI_CLIP}.json"
    if not cfg.exists():
        cfg.write_text(json.dumps({"embed_dim": 16, "quick_gelu": True,
                                   "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 16,
                                                  "head_width": 16},
                                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                                "layers": 2}}))
    open_clip.add_model_config(cfg)
    return TINY_OPENAI_CLIP


def chexzero_file(root: Path) -> Path:
    """CheXzero's checkpoint layout: torch.save of an OpenAI-CLIP model's state_dict() (QuickGELU ViT)."""
    import open_clip

    name = register_tiny_openai_clip(root)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    path = root / "best_64_5e-05_original_22000_0.864.pt"
    torch.save(model.state_dict(), path)
    return path


def xrv_pickled_densenet(root: Path) -> Path:
    """torchxrayvision's released-file layout: a whole DenseNet-121 saved with torch.save(model)."""
    import torchxrayvision as xrv

    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None)
    model.op_threshs = torch.rand(18)  # the released models carry their calibration buffer
    path = root / "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    torch.save(model, path)
    return path


def moco_checkpoint(root: Path, arch: str = "resnet18") -> Path:
    """facebookresearch/moco's checkpoint of a torchvision ResNet, MoCo v2 MLP heads (see the module docstring)."""
    import torchvision

    torch.manual_seed(0)
    state = {}
    for branch in ("encoder_q", "encoder_k"):
        net = getattr(torchvision.models, arch)(weights=None, num_classes=128)
        dim = net.fc.weight.shape[1]
        net.fc = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), net.fc)  # moco v2 --mlp
        state.update({f"module.{branch}.{k}": v for k, v in net.state_dict().items()})
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    path = root / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": arch, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9}]}}, path)
    return path


def lightning_checkpoint(root: Path, state: dict) -> Path:
    """A Lightning ``.ckpt`` of a LightningModule whose network is its ``model`` attribute."""
    path = root / "epoch=3-step=400.ckpt"
    torch.save({"epoch": 3, "global_step": 400, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{k}": v for k, v in state.items()},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}], "lr_schedulers": [],
                "callbacks": {}, "hyper_parameters": AttributeDict(lr=1e-3, arch="test_vit"),
                "hparams_name": "kwargs"}, path)
    return path


def dino_checkpoint(root: Path, state: dict) -> Path:
    """DINO's ``checkpoint.pth``: student (DDP-wrapped) and teacher, each backbone + head, and its args."""
    head = {"head.mlp.0.weight": torch.randn(16, 64), "head.last_layer.weight_g": torch.ones(32, 1)}
    path = root / "checkpoint.pth"
    torch.save({"student": {f"module.backbone.{k}": v + 1 for k, v in state.items()}
                | {f"module.{k}": v for k, v in head.items()},
                "teacher": {f"backbone.{k}": v for k, v in state.items()} | head,
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=16),
                "dino_loss": {"center": torch.zeros(1, 32)}},
               path)
    return path


class ExtraBlock(torch.nn.Module):
    """A module class of the user's own: a pickled model holding it needs more than torchxrayvision's classes."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale
