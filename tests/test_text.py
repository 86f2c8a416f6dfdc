"""The text stack: report text without the indication, tokenizer round trip, local and packaged models, and
one WordPiece stack (``harness.text``) under the multimodal protocol and the image-text baselines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
from harness.protocols import multimodal
from harness.text import MINILM, fast_tokenizer, load_tokenizer, minilm_dir, model_dir

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


# once-seen words, punctuation, accents, digits: what the two vocabulary rules treat differently
TEXTS = [*REPORTS * 3, "Fever, rule out pneumonia.", "Café patient, 12 mm nodule; query TB?", "chest pain x3 days",
         "zygomatic fracture", "Fever and chills."]
PROBE = ["small left pleural effusion.", "fever, coughing", "", "unseen quixotic words 42", "Café NODULE"]


def test_multimodal_protocol_and_baselines_build_byte_identical_tokenizers(tmp_path):
    """One tokenizer builder: the same texts, size and vocabulary rule give the same tokenizer.json on both sides."""
    args = {"text_model": None, "vocab_size": 90, "hidden_size": 8, "num_layers": 1, "num_heads": 2,
            "intermediate_size": 8, "dropout": 0.0}
    protocol, _ = multimodal.build_text_model(args, TEXTS, n_positions=24)
    baseline = train_wordpiece(TEXTS, 90, max_length=24, min_frequency=None)  # every word, as the protocol counts
    baseline.save(tmp_path / "baseline.json")  # as the baselines keep it in their workdir
    saved = load_tokenizer(tmp_path / "baseline.json")
    saved.no_truncation()  # TextTokenizer's fixed settings, which the protocol passes per call instead
    saved.no_padding()
    fast_tokenizer(saved).backend_tokenizer.save(str(tmp_path / "baseline-wrapped.json"))
    protocol.backend_tokenizer.save(str(tmp_path / "protocol.json"))
    assert (tmp_path / "baseline-wrapped.json").read_bytes() == (tmp_path / "protocol.json").read_bytes()
    assert len(protocol) == baseline.vocab_size == 90
    ids, mask = baseline.encode(PROBE)
    enc = protocol(PROBE, padding=True, truncation=True, max_length=24)
    assert ids.tolist() == enc["input_ids"] and mask.tolist() == enc["attention_mask"]
    # the baselines' own rule (JoImTeRNet's: words seen twice, plus every character word-initially) is another
    # vocabulary: "3" is only ever seen inside "x3"
    joimternet = train_wordpiece(TEXTS, 90, max_length=24).tokenizer.get_vocab()
    assert "3" in joimternet and "3" not in protocol.get_vocab() and "##3" in protocol.get_vocab()


def test_local_model_lookup_is_one_offline_lookup(tmp_path, monkeypatch):
    assert model_dir(MINILM) == minilm_dir() and (minilm_dir() / "tokenizer.json").is_file()
    assert is_text_model(MINILM) and multimodal.resolve_model_dir(MINILM) == minilm_dir()  # one spec language
    for spec, message in (("python-package:no_such_xyz.sub/model", "no installed package 'no_such_xyz.sub'"),
                          ("python-package:/model", "no installed package ''"),
                          (str(tmp_path), "is not a Hugging Face model directory \\(no config.json\\)")):
        with pytest.raises(FileNotFoundError, match=message):
            model_dir(spec)
        assert not is_text_model(spec)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert model_dir(f"~/{tmp_path.name}") == tmp_path and is_text_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"text_model '.*': tokenizer file .*tokenizer\.json not found"):
        pretrained_tokenizer(str(tmp_path), 8)


def test_importing_the_text_module_stays_cheap():
    code = "import sys, harness.text; print(sorted({'torch', 'transformers', 'tokenizers'} & set(sys.modules)))"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True).stdout
    assert out.strip() == "[]"
