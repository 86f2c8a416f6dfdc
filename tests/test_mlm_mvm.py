"""mlm-mvm: multi-scale masks, per-modality losses of mixed batches, pretrain -> load -> regenerate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.common.text import train_wordpiece
from baselines.common.train import load_checkpoint
from baselines.mlm_mvm import MLMMVMMethod
from baselines.mlm_mvm.config import MLMMVMConfig
from baselines.mlm_mvm.losses import masked_patch_loss, multiscale_patch_mask, total_loss
from baselines.mlm_mvm.model import MLMMVMModel
from baselines.mlm_mvm.pretrain import streams
from harness.cohort import TrainingData
from harness.data.images import ImageView
from harness.encoders import PretrainRequest, capabilities
from harness.encoders.preprocess import to_model_input
from tests.support import ArrayStore

REPORTS = ["no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "right upper lobe consolidation."]


def training_data(n: int, size: int, dataset: str = "mock", reports: bool = True) -> TrainingData:
    images = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    findings = [REPORTS[i % len(REPORTS)] if reports else "" for i in range(n)]
    frame = pd.DataFrame({"dataset": dataset, "image_id": [f"i{i}" for i in range(n)], "findings": findings,
                          "impression": "", "indication": "cough."})
    return TrainingData(dataset=dataset, frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"{dataset}-{n}")


def tiny_model() -> tuple[MLMMVMModel, object]:
    cfg = MLMMVMConfig(**{**MLMMVMMethod.profiles["smoke"], "mvm_scales": (1, 2)})
    tok = train_wordpiece(REPORTS * 5, vocab_size=100, max_length=16)
    return MLMMVMModel(cfg, tok.vocab_size, tok.pad_id), tok


def test_multiscale_mask_hides_squares_of_each_scale():
    g = torch.Generator().manual_seed(0)
    mask = multiscale_patch_mask(64, 8, (1, 2, 4), 0.5, g).view(64, 8, 8)
    assert mask.any(dim=(1, 2)).all() and 0.45 < mask.float().mean() < 0.55
    coarse = multiscale_patch_mask(8, 8, (4,), 0.5, g).view(8, 2, 4, 2, 4)  # 2x2 cells of 4x4 patches
    assert (coarse.all(dim=(2, 4)) | ~coarse.any(dim=(2, 4))).all()  # every cell all hidden or all visible
    assert (coarse.any(dim=(2, 4)).sum(dim=(1, 2)) == 2).all()  # half of the 4 cells


def test_masked_patch_loss_scores_hidden_patches_only():
    target, predicted = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    predicted[0, 0] = 5.0  # a wrong visible patch costs nothing
    predicted[0, 1] = 1.0
    assert masked_patch_loss(predicted, target, torch.tensor([[False, True, True, False]])) == 0.5


def test_unpaired_parts_contribute_only_their_modality():
    torch.manual_seed(0)
    model, tok = tiny_model()
    ids, mask = tok.encode(REPORTS[:2])
    labels = ids.clone()
    labels[:, 0] = -100
    texts = {"input_ids": ids, "attention_mask": mask, "mlm_ids": ids, "mlm_labels": labels}
    images = {"images": torch.randn(2, 1, 32, 32), "patch_mask": torch.rand(2, 16) < 0.5}

    terms = model({"images": images})
    assert set(terms) == {"mvm_image"}
    total_loss(terms, model.cfg).backward()
    assert model.token_embed.weight.grad is None and model.mlm_head.decoder.weight.grad is None
    assert model.patch_embed.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)

    terms = model({"texts": texts})
    assert set(terms) == {"mlm_text"}
    total_loss(terms, model.cfg).backward()
    assert model.patch_embed.weight.grad is None and model.to_pixels.weight.grad is None
    assert model.token_embed.weight.grad.abs().sum() > 0

    paired = model({"paired": {**images, **texts}})
    assert set(paired) == {"mvm_paired", "mlm_paired", "itc"} and all(torch.isfinite(v) for v in paired.values())


def test_pretrain_smoke_then_load_and_regenerate(tmp_path):
    method = MLMMVMMethod()
    config = method.profiles["smoke"]
    data = training_data(10, config["image_size"])
    data.frame.loc[0, "findings"] = ""  # no report: a counted skip in paired mode
    final = method.pretrain(PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu",
                                            progress=False))
    meta = load_checkpoint(final)["meta"]
    assert meta["data"]["skipped_no_text"] == 1 and meta["data"]["paired"] == 9
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == config["steps"] and all(np.isfinite(r[k]) for r in log for k in ("loss", "mvm_paired", "itc"))

    encoder = method.load(final, config)
    assert {"image", "text", "regeneration", "trainable"} <= capabilities(encoder)
    x = to_model_input(data.images[np.arange(3)], encoder.card.preprocess)
    mask = torch.zeros(3, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 8:24, 8:16] = True
    with torch.no_grad():
        g, t, out = encoder.encode_image(x), encoder.encode_text(["left effusion.", ""]), encoder.regenerate(x, mask)
    assert g.shape == (3, 16) and t.shape == (2, 16) and out.shape == x.shape
    assert torch.equal(out[~mask], x[~mask]) and torch.isfinite(out).all()  # visible pixels kept as given
    assert not torch.equal(out[mask], x[mask])


def test_cross_source_unpaired_uses_images_of_one_reports_of_another(tmp_path):
    method = MLMMVMMethod()
    config = {**method.profiles["smoke"], "mixing": "cross-source unpaired", "text_source": "openi", "steps": 2}
    images = training_data(8, config["image_size"], dataset="nih14", reports=False)
    reports = training_data(6, config["image_size"], dataset="openi")
    request = PretrainRequest(data=images, config=config, workdir=tmp_path, seed=0, device="cpu", progress=False,
                              load_source=lambda name: {"openi": reports}[name])
    final = method.pretrain(request)
    data_meta = load_checkpoint(final)["meta"]["data"]
    assert (data_meta["paired"], data_meta["image_only"], data_meta["text_only"]) == (0, 8, 6)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"mvm_image", "mlm_text"} <= set(log[0]) and "itc" not in log[0] and "mvm_paired" not in log[0]
    assert method.load(final, config).card.pretraining_data == ("{task}", "openi:train")
    with pytest.raises(ValueError, match="load_source"):
        method.pretrain(PretrainRequest(data=images, config=config, workdir=tmp_path / "b", seed=0, device="cpu"))


def test_paired_plus_unpaired_never_shows_both_halves_of_a_study():
    cfg = MLMMVMConfig(**{**MLMMVMMethod.profiles["smoke"], "mixing": "paired+unpaired"})
    data = training_data(40, 32)
    data.frame["findings"] = [f"report number {i}." for i in range(40)]  # a report names its row
    data.frame.loc[39, "findings"] = ""  # no report: image-only
    s = streams(PretrainRequest(data=data, config={}, workdir=None, seed=0, device="cpu"), cfg)
    text_rows = {int(t.split()[2].rstrip(".")) for t in s.texts}
    paired_rows = {int(t.split()[2].rstrip(".")) for t in s.paired_texts}
    assert paired_rows == set(s.paired_images.tolist())  # pairs stay pairs
    assert (len(s.paired_images), len(s.image_rows), len(s.texts)) == (19, 11, 10)  # 39 reports: 19 / 10+1 / 10
    assert not text_rows & set(s.image_rows.tolist()) and not paired_rows & (text_rows | set(s.image_rows.tolist()))
