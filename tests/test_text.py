"""The text stack: report text without the indication, tokenizer round trip, local and packaged models."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from baselines.common.text import (
    IGNORE_INDEX,
    MLMHead,
    TextTokenizer,
    build_text_encoder,
    is_text_model,
    mlm_mask,
    pretrained_tokenizer,
    report_texts,
    train_wordpiece,
)
from harness.text import minilm_dir

REPORTS = ["no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "the lungs are clear."]


def test_report_text_is_findings_and_impression_never_indication():
    frame = pd.DataFrame({"indication": ["fever, rule out pneumonia", "chest pain"],
                          "findings": ["lungs clear.", None], "impression": ["no pneumonia.", ""]})
    assert report_texts(frame) == ["lungs clear. no pneumonia.", ""]
    with pytest.raises(KeyError, match="impression"):
        report_texts(frame.drop(columns="impression"))


def test_wordpiece_round_trip_truncates_with_sep(tmp_path):
    tok = train_wordpiece(REPORTS * 5, vocab_size=120, max_length=6)
    ids, mask = tok.encode(["small left pleural effusion with basilar atelectasis.", "clear"])
    assert ids.shape == (2, 6) and ids[0, 0] == tok.cls_id and ids[0, -1] == tok.sep_id  # truncated, still [SEP]
    assert mask[1].tolist()[-1] == 0 and ids[1, -1] == tok.pad_id
    tok.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.load(tmp_path / "tokenizer.json", 6)
    assert torch.equal(again.encode(["clear"])[0], tok.encode(["clear"])[0]) and again.vocab_size == tok.vocab_size
    with pytest.raises(ValueError, match="no report text"):
        train_wordpiece(["", ""], vocab_size=50, max_length=8)


def test_mlm_never_selects_special_or_padding_and_the_head_scores_it():
    tok = train_wordpiece(REPORTS * 5, vocab_size=120, max_length=16)
    ids, mask = tok.encode(["", "the lungs are clear."] * 50)  # "" = [CLS] [SEP] + padding: nothing to mask
    masked, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(0), probability=0.5)
    assert (labels[0::2] == IGNORE_INDEX).all() and torch.equal(masked[0::2], ids[0::2])
    assert (labels[1::2] != IGNORE_INDEX).any()
    text = build_text_encoder("scratch", tok.vocab_size, hidden=16, layers=1, heads=2, ffn=32)
    tokens, cls = text(masked, mask)
    logits = MLMHead(16, tok.vocab_size)(tokens)
    assert logits.shape == (*ids.shape, tok.vocab_size) and cls.shape == (100, 16)


def test_minilm_as_packaged_and_as_a_local_directory_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(minilm_dir())
    assert is_text_model("minilm") and is_text_model(path) and not is_text_model("no/such/dir")
    tok = pretrained_tokenizer(path, 32)
    text = build_text_encoder(path, tok.vocab_size).eval()
    with torch.no_grad():
        tokens, cls = text(*tok.encode(["small left pleural effusion.", "no acute process."]))
    assert cls.shape == (2, 384) and torch.isfinite(tokens).all()
    assert torch.nn.functional.cosine_similarity(cls[0], cls[1], dim=0) < 0.999  # different texts, different vectors
    with pytest.raises(ValueError, match="vocabulary"):
        build_text_encoder("minilm", vocab_size=100, pretrained=False)  # no silent mismatch with a tokenizer
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder("/nonexistent/model", vocab_size=100)
