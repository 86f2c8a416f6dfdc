"""Region-word parity: the harness's JoImTeRNet losses and update against transcriptions of the references.

Read:

- marshuang80/gloria at 416466a: ``gloria/loss/gloria_loss.py`` (``cosine_similarity``,
  ``attention_fn``, ``global_loss``, ``local_loss`` with temp1 4, temp2 5, temp3 10, agg "sum");
- mshaikh2/JoImTeR_MLMI_2021 at 965bca9, the code JoImTeRNet trained with: ``misc/GlobalAttention.py``
  (``func_attention``, the same as GLoRIA's ``attention_fn``), ``misc/losses.py`` (``sent_loss``,
  ``words_loss``, ``sent_triplet_loss``, ``words_triplet_loss``, ``word_similarity``,
  ``triplet_loss_with_cosine_distance``), ``JoImTeR/trainer_pretrain.py`` (what reaches the losses:
  ``words_embs[:, :, 1:]`` and ``cap_lens - 1``; one ``neg_ids`` per batch; the total
  ``LAMBDA_DAMSM (s0 + s1 + w0 + w1) + LAMBDA_TRIPLET (st0 + st1 + wt0 + wt1)``; after backward
  ``clip_grad_norm_(image_encoder, 1.5)``, ``optimizerI.step()``, ``clip_grad_norm_(text_encoder, 1.5)``,
  ``optimizerT.step()``; an MLM step: the MLM loss, text side only), ``JoImTeR/dataset_mimic_pretrain.py``
  (``cap_lens`` counts [CLS] ... [SEP]).

The references' math, in my words (written out again below, without the project's code):

1. Attention (AttnGAN / GLoRIA ``attention_fn``): for caption i's words w (E x T_i) against image
   j's regions r (E x R): a = r^T w (R x T_i); softmax over the WORDS (each region's row); transpose,
   times temp1, softmax over the REGIONS; context c = r a^T (E x T_i).
2. Word-region score of (image j, caption i): log sum over the caption's words of
   exp(temp2 cos(w_t, c_t)) (``agg="sum"``); the words are the tokens after [CLS] up to and with
   [SEP] (``words_embs[:, :, 1:]``, ``cap_lens - 1``). Scores (B_img x B_txt) times temp3; CE over
   rows (image -> text) and over columns.
3. Global: cos(image global, sentence) times temp3, CE both ways (``global_loss`` / ``sent_loss``).
   JoImTeRNet also masks same-study off-diagonals (``class_ids`` = the study id), which never
   occur in its data (one image per study per epoch); none occur here.
4. Triplets: one ``neg_ids`` per batch (uniform over the other pairs), the same index for both
   anchors. Sentence: relu(d(a, p) - d(a, n) + 0.5), d = 1 - cos, image-anchored (negative text
   ``neg_ids[i]``) and text-anchored (negative image ``neg_ids[i]``), each a mean over the batch.
   Word: the same hinge with d = -(the word-region score of step 2, without temp3).
   Divergence kept as a harness choice (``baselines.region_word.losses`` item 4): the authors'
   image-anchored word triplet scores the negative caption with the ANCHOR's length
   (``cap_lens[i]``); the harness uses each caption's own words. ``ref_words_triplet`` has both;
   they agree when the lengths do (tested) and the harness equals the own-length variant.

The negatives: the reference draws ``np.random.choice(ids[ids != x])``; the test hands the
transcription the harness's draw (the same law: uniform over the other pairs).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.backbones import CnnBackbone
from baselines.common.text import IGNORE_INDEX, build_text_encoder, mlm_mask, train_wordpiece
from baselines.common.train import StepContext
from baselines.region_word.config import RegionWordConfig
from baselines.region_word.losses import matching_losses, total_loss
from baselines.region_word.model import RegionWordModel
from baselines.region_word.optim import EncoderOptimizer
from baselines.region_word.pretrain import region_word_step

ATOL = 1e-6
RTOL = 1e-6  # float32 as the harness computes, with logits x GAMMA3 = 10: a few 1e-6 on a loss of about 5


def assert_near(got: torch.Tensor, want: torch.Tensor, msg: str) -> None:
    """Within 1e-6 of the tensor's scale (float32 gradients of order 1-10 agree to a few 1e-6)."""
    err, scale = float((got - want).abs().max()), max(1.0, float(want.abs().max()))
    assert err <= ATOL * scale, f"{msg}: max |difference| {err:.3g} at scale {scale:.3g}"
CFG = RegionWordConfig(batch_size=5)  # the paper's gammas 4 / 5 / 10, margins 0.5, lambdas 1 / 2
B, E, GRID, T = 5, 6, 3, 8


def fixed_features(equal_lengths: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = [T] * B if equal_lengths else [8, 5, 3, 7, 6]  # [CLS] w ... [SEP], then padding
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return {"image_global": torch.randn(B, E, generator=g).requires_grad_(),
            "regions": torch.randn(B, GRID * GRID, E, generator=g).requires_grad_(),
            "sentence": torch.randn(B, E, generator=g).requires_grad_(),
            "words": torch.randn(B, T, E, generator=g).requires_grad_(),
            "attention_mask": mask}


def harness_negatives(seed: int) -> torch.Tensor:
    """The harness's one draw for the batch (``random_negatives`` on ``matching_losses``' generator)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(B) + torch.randint(1, B, (B,), generator=g)) % B


# ---------------------------------------------------------------- the references, transcribed


def ref_cosine(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return ((x1 * x2).sum(dim) / (x1.norm(2, dim) * x2.norm(2, dim)).clamp(min=eps)).squeeze()


def ref_attention(query: torch.Tensor, context: torch.Tensor, temp1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``query (b, E, Tq), context (b, E, ih, iw) -> weighted context (b, E, Tq), attention (b, Tq, R)``."""
    b, tq = query.shape[0], query.shape[2]
    src = context.shape[2] * context.shape[3]
    context = context.reshape(b, -1, src)
    attn = torch.bmm(context.transpose(1, 2), query)  # (b, R, Tq)
    attn = torch.softmax(attn.reshape(b * src, tq), dim=-1).reshape(b, src, tq)  # over the words
    attn = attn.transpose(1, 2).reshape(b * tq, src)
    attn = torch.softmax(attn * temp1, dim=-1).reshape(b, tq, src)  # over the regions
    return torch.bmm(context, attn.transpose(1, 2)), attn


def ref_word_score(img: torch.Tensor, words: torch.Tensor, temp1: float, temp2: float) -> torch.Tensor:
    """``img (b, E, ih, iw), words (b, E, n) -> (b,)``: log sum_words exp(temp2 cos(word, context))."""
    b, n = words.shape[0], words.shape[2]
    context, _ = ref_attention(words, img, temp1)
    sim = ref_cosine(words.transpose(1, 2).reshape(b * n, -1), context.transpose(1, 2).reshape(b * n, -1))
    return torch.log(torch.exp(sim.reshape(b, n) * temp2).sum(dim=1))


def ref_local_loss(img: torch.Tensor, words: torch.Tensor, cap_lens: list[int], temp1=4.0, temp2=5.0, temp3=10.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GLoRIA ``local_loss`` / JoImTeRNet ``words_loss``: (loss i->t, loss t->i, the (B_img, B_txt) scores)."""
    n_img = img.shape[0]
    columns = []
    for i in range(words.shape[0]):
        word = words[i, :, :cap_lens[i]].unsqueeze(0).repeat(n_img, 1, 1)  # caption i against every image
        columns.append(ref_word_score(img, word, temp1, temp2).unsqueeze(1))
    scores = torch.cat(columns, dim=1)  # (B_img, B_txt)
    labels = torch.arange(n_img)
    logits = scores * temp3
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels), scores


def ref_global_loss(cnn: torch.Tensor, rnn: torch.Tensor, temp3: float = 10.0, eps: float = 1e-8
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    scores = cnn @ rnn.T / (cnn.norm(dim=1, keepdim=True) @ rnn.norm(dim=1, keepdim=True).T).clamp(min=eps) * temp3
    labels = torch.arange(cnn.shape[0])
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.T, labels)


def ref_sent_triplet(cnn: torch.Tensor, rnn: torch.Tensor, neg: torch.Tensor, margin: float = 0.5
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    def hinge(a, p, n):
        return F.relu((1 - ref_cosine(a, p)) - (1 - ref_cosine(a, n)) + margin)

    return hinge(cnn, rnn, rnn[neg]).mean(), hinge(rnn, cnn, cnn[neg]).mean()


def ref_words_triplet(img: torch.Tensor, words: torch.Tensor, neg: torch.Tensor, cap_lens: list[int],
                      negative_length: str, temp1=4.0, temp2=5.0, margin=0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``words_triplet_loss``; ``negative_length`` "anchor" (the authors' ``cap_lens[i]``) or "own"."""
    def distance(image, caption, n):  # word_similarity: minus the score of one (image, caption)
        return -ref_word_score(image, caption[:, :, :n], temp1, temp2)

    i2t, t2i = [], []
    for i in range(img.shape[0]):
        j = int(neg[i])
        n_neg = cap_lens[i] if negative_length == "anchor" else cap_lens[j]
        i2t.append(F.relu(distance(img[i:i + 1], words[i:i + 1], cap_lens[i])
                          - distance(img[i:i + 1], words[j:j + 1], n_neg) + margin))
        t2i.append(F.relu(distance(img[i:i + 1], words[i:i + 1], cap_lens[i])
                          - distance(img[j:j + 1], words[i:i + 1], cap_lens[i]) + margin))
    return torch.cat(i2t).mean(), torch.cat(t2i).mean()


def reference_terms(f: dict[str, torch.Tensor], neg: torch.Tensor, negative_length: str = "own"
                    ) -> dict[str, torch.Tensor]:
    """The trainer's ITM terms from the features laid out as JoImTeRNet's encoders return them."""
    img = f["regions"].transpose(1, 2).reshape(B, E, GRID, GRID)  # (B, E, ih, iw)
    words = f["words"].transpose(1, 2)[:, :, 1:]  # (B, E, T - 1): words_embs[:, :, 1:]
    cap_lens = (f["attention_mask"].sum(1) - 1).tolist()  # cap_lens - 1
    out = {}
    out["sent_i2t"], out["sent_t2i"] = ref_global_loss(f["image_global"], f["sentence"])
    out["word_i2t"], out["word_t2i"], _ = ref_local_loss(img, words, cap_lens)
    out["trip_sent_img"], out["trip_sent_txt"] = ref_sent_triplet(f["image_global"], f["sentence"], neg)
    out["trip_word_img"], out["trip_word_txt"] = ref_words_triplet(img, words, neg, cap_lens, negative_length)
    return out


def reference_itm_loss(terms: dict[str, torch.Tensor], lambda_damsm: float = 1.0, lambda_triplet: float = 2.0
                       ) -> torch.Tensor:
    damsm = terms["sent_i2t"] + terms["sent_t2i"] + terms["word_i2t"] + terms["word_t2i"]
    triplet = terms["trip_sent_img"] + terms["trip_sent_txt"] + terms["trip_word_img"] + terms["trip_word_txt"]
    return lambda_damsm * damsm + lambda_triplet * triplet


# ---------------------------------------------------------------- the losses


def harness_terms(f: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    return matching_losses(f["image_global"], f["regions"], f["sentence"], f["words"], f["attention_mask"], CFG,
                           torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_losses_and_gradients_match_gloria_and_joimternet(seed):
    f = fixed_features(seed=seed)
    got = harness_terms(f, seed)
    want = reference_terms({k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in f.items()},
                           harness_negatives(seed))
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=RTOL, atol=ATOL, msg=name)
    assert all(float(v) > 1e-3 for k, v in want.items() if k.endswith(("i2t", "t2i")))  # not degenerate
    assert float(want["trip_word_img"]) > 0 and float(want["trip_sent_img"]) > 0  # the hinges are active

    g = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in f.items()}
    total = total_loss({**harness_terms(f, seed), "mlm": torch.zeros(())}, CFG, itm_step=True)
    ref_total = reference_itm_loss(reference_terms(g, harness_negatives(seed)))
    torch.testing.assert_close(total, ref_total, rtol=RTOL, atol=ATOL)
    total.backward()
    ref_total.backward()
    for name in ("image_global", "regions", "sentence", "words"):
        assert_near(f[name].grad, g[name].grad, f"d loss / d {name}")
    assert f["words"].grad[f["attention_mask"] == 0].abs().max() == 0  # padding words take no part
    assert f["words"].grad[:, 0].abs().max() == 0  # nor [CLS]


def test_the_word_triplet_negative_length_is_the_one_documented_difference():
    """Equal caption lengths: the authors' anchor-length slicing is the harness exactly. Unequal: it
    reads the negative caption at the wrong length, and the harness keeps each caption's own."""
    same = fixed_features(equal_lengths=True, seed=4)
    got = harness_terms(same, 4)
    anchor = reference_terms(same, harness_negatives(4), negative_length="anchor")
    torch.testing.assert_close(got["trip_word_img"], anchor["trip_word_img"], rtol=RTOL, atol=ATOL)
    differ = fixed_features(seed=4)
    got = harness_terms(differ, 4)
    own = reference_terms(differ, harness_negatives(4), negative_length="own")
    anchor = reference_terms(differ, harness_negatives(4), negative_length="anchor")
    torch.testing.assert_close(got["trip_word_img"], own["trip_word_img"], rtol=RTOL, atol=ATOL)
    assert abs(float(anchor["trip_word_img"]) - float(own["trip_word_img"])) > 1e-3
    torch.testing.assert_close(got["trip_word_txt"], anchor["trip_word_txt"], rtol=RTOL, atol=ATOL)  # not affected


def test_gloria_attention_is_the_harness_attention():
    from baselines.region_word.losses import word_mask, word_region_attention

    f = fixed_features(seed=5)
    attn, context = word_region_attention(f["words"], word_mask(f["attention_mask"]), f["regions"], 4.0)
    img = f["regions"].transpose(1, 2).reshape(B, E, GRID, GRID)
    for i, n in enumerate(f["attention_mask"].sum(1).tolist()):
        ref_context, ref_attn = ref_attention(f["words"][i:i + 1, 1:n].transpose(1, 2), img[i:i + 1], 4.0)
        torch.testing.assert_close(attn[i, 1:n], ref_attn[0], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(context[i, 1:n], ref_context[0].T, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- one ITM and one MLM update

REPORTS = ["no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "right upper lobe consolidation, pneumonia.",
           "the lungs are clear. no pneumothorax."]


def tiny_model(tok) -> RegionWordModel:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    text = build_text_encoder("scratch", vocab_size=tok.vocab_size, hidden=16, layers=1, heads=2, ffn=32,
                              dropout=0.0)
    return RegionWordModel(CnnBackbone("tiny", trunk, num_features=8, in_chans=3, stride=4), text, embed_dim=E)


def split_params(model: RegionWordModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    image = [p for n, p in model.named_parameters() if n.startswith(("backbone.", "region_proj.", "global_proj."))]
    ids = {id(p) for p in image}
    return image, [p for p in model.parameters() if id(p) not in ids]


def fixed_batch(tok, seed: int) -> dict[str, torch.Tensor]:
    ids, mask = tok.encode(REPORTS)
    masked, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(seed), probability=0.3)
    images = torch.randn(B, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    return {"images": images, "input_ids": ids, "attention_mask": mask, "mlm_ids": masked, "mlm_labels": labels}


def reference_itm_step(model: RegionWordModel, opt_i, opt_t, batch, neg: torch.Tensor, clip: float) -> torch.Tensor:
    """trainer_pretrain's ITM branch on the same networks: both encoders, then each clipped and stepped."""
    image_params, text_params = split_params(model)
    model.zero_grad()
    image_global, regions = model.image_features(batch["images"])
    sentence, words = model.text_features(batch["input_ids"], batch["attention_mask"])
    n, r = regions.shape[0], regions.shape[1]
    img = regions.transpose(1, 2).reshape(n, -1, int(r ** 0.5), int(r ** 0.5))
    words_t = words.transpose(1, 2)[:, :, 1:]
    cap_lens = (batch["attention_mask"].sum(1) - 1).tolist()
    terms = {}
    terms["sent_i2t"], terms["sent_t2i"] = ref_global_loss(image_global, sentence)
    terms["word_i2t"], terms["word_t2i"], _ = ref_local_loss(img, words_t, cap_lens)
    terms["trip_sent_img"], terms["trip_sent_txt"] = ref_sent_triplet(image_global, sentence, neg)
    terms["trip_word_img"], terms["trip_word_txt"] = ref_words_triplet(img, words_t, neg, cap_lens, "own")
    loss = reference_itm_loss(terms)
    loss.backward()
    nn.utils.clip_grad_norm_(image_params, clip)
    opt_i.step()
    nn.utils.clip_grad_norm_(text_params, clip)
    opt_t.step()
    return loss.detach()


def reference_mlm_step(model: RegionWordModel, opt_t, batch, clip: float) -> torch.Tensor:
    """trainer_pretrain's MLM branch: the text encoder alone, CE over the masked tokens (ignore -1 there)."""
    _, text_params = split_params(model)
    model.zero_grad()
    tokens, _ = model.text(batch["mlm_ids"], batch["attention_mask"])
    logits = model.mlm_head(tokens)  # every position; the CE ignores the unselected ones
    loss = F.cross_entropy(logits.flatten(0, 1), batch["mlm_labels"].flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    nn.utils.clip_grad_norm_(text_params, clip)
    opt_t.step()
    return loss.detach()


def find_seed(want_itm: bool, cfg: RegionWordConfig) -> int:
    from baselines.region_word.losses import is_itm_step

    return next(s for s in range(100) if is_itm_step(cfg, 0, s) is want_itm)


def test_an_itm_then_an_mlm_update_match_the_authors_trainer():
    """The paper profile's sampled steps (itm_probability 0.3), through ``region_word_step`` and
    ``EncoderOptimizer`` as the Trainer calls them, against the authors' two AdamW optimisers: the
    ITM step clips and steps each encoder on its own norm; a step leaves the parameters its task does
    not use alone (the MLM head on ITM steps; the image side, weights, AdamW state and BatchNorm
    statistics, and the word / sentence projections on MLM steps), as ``zero_grad`` + AdamW do there."""
    cfg = RegionWordConfig(batch_size=B, lr=1e-3, weight_decay=1e-2, grad_clip=0.05, itm_probability=0.3)
    tok = train_wordpiece(REPORTS * 4, vocab_size=80, max_length=16)
    model = tiny_model(tok).train()
    ref = copy.deepcopy(model)
    image_params, text_params = split_params(model)
    opt = EncoderOptimizer(image_params, text_params, lr=cfg.lr, weight_decay=cfg.weight_decay, clip=cfg.grad_clip)
    ref_image, ref_text = split_params(ref)
    opt_i = torch.optim.AdamW(ref_image, lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_t = torch.optim.AdamW(ref_text, lr=cfg.lr, weight_decay=cfg.weight_decay)

    for want_itm in (True, False, True):
        step = find_seed(want_itm, cfg)
        ctx = StepContext(step=step, total_steps=200, seed=0)
        batch = fixed_batch(tok, step)
        image_before = {n: t.clone() for n, t in model.state_dict().items() if n.startswith("backbone.")}
        loss, logged = region_word_step(model, batch, cfg, ctx, opt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad.norm() for p in image_params]
        opt.step()
        assert logged["itm_step"] == float(want_itm)
        if want_itm:
            from baselines.common.seeding import step_generator

            g = step_generator(0, step, 0, 2)
            neg = (torch.arange(B) + torch.randint(1, B, (B,), generator=g)) % B
            want = reference_itm_step(ref, opt_i, opt_t, batch, neg, cfg.grad_clip)
            assert sum(float(g_) for g_ in grads) > cfg.grad_clip  # the clip is active
        else:
            want = reference_mlm_step(ref, opt_t, batch, cfg.grad_clip)
            for n, t in model.state_dict().items():
                if n.startswith("backbone."):
                    assert torch.equal(t, image_before[n]), f"{n} moved on an MLM step"
        torch.testing.assert_close(loss.detach(), want, rtol=RTOL, atol=ATOL)
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert_near(p, q, f"{name} after the {'ITM' if want_itm else 'MLM'} step")
        for (name, b), c in zip(model.named_buffers(), ref.buffers(), strict=True):
            torch.testing.assert_close(b, c, rtol=RTOL, atol=ATOL, msg=f"buffer {name}")


def test_encoder_optimizer_refuses_a_parameter_it_does_not_hold():
    opt = EncoderOptimizer([nn.Parameter(torch.ones(1))], [nn.Parameter(torch.ones(1))], lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="not in the optimiser"):
        opt.rest([nn.Parameter(torch.ones(1))])
