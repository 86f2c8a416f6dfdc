"""region-word (JoImTeRNet): word-region attention, MLM masking, ITM learning, pretrain -> load, MiniLM offline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from baselines.common.backbones import CnnBackbone
from baselines.common.text import IGNORE_INDEX, build_text_encoder, minilm_tokenizer, mlm_mask, train_wordpiece
from baselines.common.train import load_checkpoint
from baselines.region_word import RegionWordMethod
from baselines.region_word.config import RegionWordConfig
from baselines.region_word.losses import is_itm_step, mlm_loss, total_loss, word_region_attention, word_region_scores
from baselines.region_word.model import RegionWordModel
from baselines.region_word.pretrain import region_word_losses
from harness.cohort import TrainingData
from harness.data.images import ImageView
from harness.data.schema import DataError
from harness.encoders import PretrainRequest, capabilities
from harness.encoders.preprocess import to_model_input
from tests.support import ArrayStore

REPORTS = ["no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "right upper lobe consolidation, pneumonia.",
           "the lungs are clear. no pneumothorax.", "moderate pulmonary edema and bilateral effusions."]


def training_data(n: int, size: int, seed: int = 0) -> TrainingData:
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    findings = [REPORTS[i % len(REPORTS)] for i in range(n)]
    impression = ["" if i % 3 else "stable." for i in range(n)]
    frame = pd.DataFrame({"dataset": "mock", "image_id": [f"i{i}" for i in range(n)], "findings": findings,
                          "impression": impression})
    frame.loc[0, ["findings", "impression"]] = [None, None]  # no report at all: a counted skip
    return TrainingData(dataset="mock", frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"test-{n}-{size}-{seed}")


def tiny_backbone() -> CnnBackbone:
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1))
    return CnnBackbone("tiny", trunk, num_features=16, in_chans=3, stride=4)


def test_word_region_attention_shapes_and_padding():
    torch.manual_seed(0)
    words, regions = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    attention, context = word_region_attention(words, mask, regions, gamma1=4.0)
    assert attention.shape == (3, 5, 4) and context.shape == (3, 5, 8)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 5))  # each word: a distribution over regions
    torch.testing.assert_close(context, attention @ regions)
    # padded words change nothing: scores equal those computed on the unpadded words alone
    scores = word_region_scores(words, mask, regions, 4.0, 5.0)  # (3 captions, 3 images)
    assert scores.shape == (3, 3) and torch.isfinite(scores).all()
    garbage = words.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)
    torch.testing.assert_close(word_region_scores(garbage, mask, regions, 4.0, 5.0), scores)
    alone = word_region_scores(words[1:2, 1:3], torch.ones(1, 2, dtype=torch.bool), regions, 4.0, 5.0)
    torch.testing.assert_close(alone, scores[1:2])


def test_mlm_masks_only_real_tokens_at_the_rate():
    tok = train_wordpiece(REPORTS * 10, vocab_size=120, max_length=24)
    ids, mask = tok.encode(REPORTS * 200)
    masked, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(0), probability=0.15)
    selected = labels != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(tok.special_ids)) | (mask == 0)
    assert not (selected & special).any()  # never [CLS], [SEP], [PAD]
    assert torch.equal(masked[~selected], ids[~selected]) and torch.equal(labels[selected], ids[selected])
    rate = selected.sum() / (~special).sum()
    assert 0.13 < rate < 0.17
    as_mask = (masked[selected] == tok.mask_id).float().mean()
    unchanged = (masked[selected] == ids[selected]).float().mean()
    assert 0.76 < as_mask < 0.84 and 0.07 < unchanged < 0.14


def test_mlm_loss_on_the_selected_positions_equals_the_full_cross_entropy():
    torch.manual_seed(0)
    tok = train_wordpiece(REPORTS * 5, vocab_size=100, max_length=16)
    text = build_text_encoder("scratch", vocab_size=tok.vocab_size, hidden=16, layers=1, heads=2, ffn=32, dropout=0.0)
    model = RegionWordModel(tiny_backbone(), text, embed_dim=16)
    ids, mask = tok.encode(REPORTS)
    masked, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(1), probability=0.3)
    selected = labels != IGNORE_INDEX
    assert 0 < selected.sum() < mask.sum()
    tokens, _ = model.text(masked, mask)
    full = torch.nn.functional.cross_entropy(model.mlm_head(tokens).flatten(0, 1), labels.flatten(),
                                             ignore_index=IGNORE_INDEX)  # the head at every position
    logits = model.mlm_logits(masked, mask, selected)
    assert logits.shape == (int(selected.sum()), tok.vocab_size)
    torch.testing.assert_close(mlm_loss(logits, labels[selected]), full)
    none = model.mlm_logits(masked, mask, torch.zeros_like(selected))
    assert mlm_loss(none, labels[:0, 0]).item() == 0.0


def test_itm_losses_make_the_pairs_match():
    torch.manual_seed(0)
    cfg = RegionWordConfig(embed_dim=16, gamma3=10.0)
    tok = train_wordpiece(REPORTS * 5, vocab_size=100, max_length=16)
    text = build_text_encoder("scratch", vocab_size=tok.vocab_size, hidden=16, layers=1, heads=2, ffn=32, dropout=0.0)
    model = RegionWordModel(tiny_backbone(), text, embed_dim=16)
    images = torch.rand(4, 3, 16, 16)
    ids, mask = tok.encode(REPORTS[:4])
    batch = {"images": images, "input_ids": ids, "attention_mask": mask, "mlm_ids": ids,
             "mlm_labels": torch.full_like(ids, IGNORE_INDEX)}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        terms = region_word_losses(model, batch, cfg, torch.Generator().manual_seed(step))
        loss = total_loss(terms, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()  # as an encoder is used: BatchNorm on its running statistics
    with torch.no_grad():
        image_global, _ = model.image_features(images)
        sentence, _ = model.text_features(ids, mask)
        sim = torch.nn.functional.normalize(image_global, dim=1) @ torch.nn.functional.normalize(sentence, dim=1).T
    assert torch.equal(sim.argmax(1), torch.arange(4)) and torch.equal(sim.argmax(0), torch.arange(4))


def test_pretrain_smoke_then_load(tmp_path):
    method = RegionWordMethod()
    config = method.profiles["smoke"]
    data = training_data(12, config["image_size"])
    request = PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu", progress=False)
    final = method.pretrain(request)
    assert (tmp_path / "tokenizer.json").is_file()
    ckpt = load_checkpoint(final)
    assert ckpt["step"] == config["steps"] and ckpt["meta"]["data"]["skipped_no_text"] == 1
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, config["steps"] + 1))
    assert all(np.isfinite(r[k]) for r in log for k in ("loss", "sent_i2t", "word_t2i", "trip_word_img", "mlm"))

    encoder = method.load(final, config)
    x = to_model_input(data.images[np.arange(3)], encoder.card.preprocess)
    with torch.no_grad():
        g, r = encoder.encode_image(x), encoder.encode_image_regions(x)
        t = encoder.encode_text(["small left pleural effusion.", "", "no acute process"])
    h, w = encoder.region_grid
    assert g.shape == (3, 32) and r.shape == (3, h * w, 32) and t.shape == (3, 32)
    assert all(torch.isfinite(v).all() for v in (g, r, t))
    assert {"image", "image_regions", "text", "trainable", "localization"} <= capabilities(encoder)
    assert method.pretrain(request) == final  # a finished run is reused


def test_minilm_loads_offline_and_embeds():
    tok = minilm_tokenizer(32)
    text = build_text_encoder("minilm", vocab_size=tok.vocab_size)
    text.eval()
    with torch.no_grad():
        words, cls = text(*tok.encode(["small left pleural effusion.", "no acute cardiopulmonary process."]))
    assert cls.shape == (2, 384) and words.shape[0] == 2 and torch.isfinite(words).all()
    assert tok.vocab_size == 30522 and tok.cls_id == 101


def test_training_data_without_reports_is_a_clear_error(tmp_path):
    method = RegionWordMethod()
    data = training_data(6, 32)
    data.frame["findings"], data.frame["impression"] = "", None
    request = PretrainRequest(data=data, config=method.profiles["smoke"], workdir=tmp_path, seed=0, device="cpu",
                              progress=False)
    with pytest.raises(DataError, match="0 training images with report text"):
        method.pretrain(request)


def test_minilm_text_model_pretrains_and_loads(tmp_path):
    method = RegionWordMethod()
    config = {**method.profiles["smoke"], "text_model": "minilm", "steps": 1}
    data = training_data(8, config["image_size"])
    final = method.pretrain(PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu",
                                            progress=False))
    assert not (tmp_path / "tokenizer.json").exists()  # MiniLM's own vocabulary, from the package
    encoder = method.load(final, config)
    assert encoder.model.text.hidden_size == 384 and encoder.tokenizer.vocab_size == 30522
    with torch.no_grad():
        t = encoder.encode_text(["small left pleural effusion.", "no acute process"])
    assert t.shape == (2, 32) and torch.isfinite(t).all()


def test_paper_profile_samples_itm_or_mlm_per_step():
    cfg = RegionWordConfig()  # paper: ITM with p 0.3, else MLM
    draws = [is_itm_step(cfg, seed=0, step=s) for s in range(2000)]
    assert 0.27 < np.mean(draws) < 0.33 and RegionWordConfig(itm_probability=None).itm_probability is None
    terms = {k: torch.tensor(1.0) for k in ("sent_i2t", "sent_t2i", "word_i2t", "word_t2i", "trip_sent_img",
                                             "trip_sent_txt", "trip_word_img", "trip_word_txt")}
    terms["mlm"] = torch.tensor(5.0)
    assert total_loss(terms, cfg, itm_step=False) == 5.0  # an MLM step: the reports' loss only
    assert total_loss(terms, cfg, itm_step=True) == 4.0 + 2.0 * 4  # lambda_DAMSM 4 CEs + lambda_TRIPLET 4 hinges
    assert total_loss(terms, cfg, itm_step=None) == 17.0
