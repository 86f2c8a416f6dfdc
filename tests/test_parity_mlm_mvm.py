"""BERT masking and masked-patch regeneration: the harness's code against transcriptions of the references.

Read:

- huggingface/transformers 5.23.0 as installed in the venv: ``transformers/data/data_collator.py``,
  ``DataCollatorForLanguageModeling.torch_mask_tokens`` (and ``torch_call`` for the padding);
- facebookresearch/mae at efb2a80: ``models_mae.py`` (``patchify``, ``random_masking``,
  ``forward_loss``);
- microsoft/SimMIM at d3e29bc: ``models/simmim.py`` (``SimMIM.forward``: the patch mask repeated to
  pixels, ``l1_loss`` per pixel, summed under the mask, divided by (masked pixels + 1e-5) and by
  the channel count);
- mshaikh2/JoImTeR_MLMI_2021 at 965bca9: ``JoImTeR/dataset_mimic_pretrain.py`` (``mask_input``:
  random replacements drawn from ids 4 ... [MASK] - 1, never a special token).

The references' math, in my words:

- BERT masking (HF): labels start as the ids. A probability matrix holds ``mlm_probability``
  everywhere and 0 at special tokens (``get_special_tokens_mask``: [PAD] included, so padding
  is never chosen); ``selected = bernoulli(matrix)``; labels are -100 where not selected.
  ``replaced = bernoulli(0.8) & selected`` become [MASK]; ``random = bernoulli(0.1 / 0.2) &
  selected & ~replaced`` take ``randint(len(tokenizer))`` drawn for every position; the rest
  keep their id. The four draws come from one generator, in this order.
  Harness choice (named in ``baselines.common.text.mlm_mask``): the random id is an ordinary
  token, as JoImTeRNet draws it: the transcription maps its ``randint`` to the ordinary ids.
- MAE masking: ``len_keep = int(L (1 - ratio))``; ``noise = rand(N, L)``; ``ids_shuffle =
  argsort(noise)`` (small noise kept); the mask is 1 at ``ids_shuffle[len_keep:]`` and 0 at
  ``ids_shuffle[:len_keep]`` put back in place by ``argsort(ids_shuffle)``.
- MAE loss: ``target = patchify(imgs)`` (row-major patches, each ``p x p x C`` pixels), optionally
  normalised per patch (``norm_pix_loss``); ``loss = mean over a patch's pixels of (pred -
  target)^2``, then ``sum(loss * mask) / sum(mask)``: removed patches only.
  Harness choices (``MLMMVMConfig.mvm_loss``): L1 by default (SimMIM; ``mvm_loss: l2`` is MAE's
  square); never ``norm_pix_loss`` (the decoder's pixels are the regeneration output).
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from baselines.common.text import IGNORE_INDEX, mlm_mask, train_wordpiece
from baselines.mlm_mvm.config import MLMMVMConfig
from baselines.mlm_mvm.losses import masked_patch_loss, multiscale_patch_mask, random_masking
from baselines.mlm_mvm.model import MLMMVMModel

REPORTS = ["no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "right upper lobe consolidation is seen.",
           "", "stable appearance of the chest with no new focal opacity or effusion."]
ATOL = 1e-6


def tokenizer():
    return train_wordpiece(REPORTS * 5, vocab_size=120, max_length=20)


def fixed_ids() -> tuple[torch.Tensor, torch.Tensor]:
    tok = tokenizer()
    ids, mask = tok.encode(REPORTS * 40)  # (240, T): padding, [CLS], [SEP] and a few [UNK] among them
    return ids, mask


# ---------------------------------------------------------------- BERT masking (HF), transcribed


def hf_mask_tokens(ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab: int, probability: float,
                   generator: torch.Generator, random_pool: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch_mask_tokens with mask_replace_prob 0.8 and random_replace_prob 0.1; ``special`` (B, T) bool.

    Returns the masked inputs, the labels and where a random id was put.

    ``random_pool``: the ids a random replacement maps onto (None: the whole vocabulary, as HF).
    """
    inputs, labels = ids.clone(), ids.clone()
    matrix = torch.full(labels.shape, probability)
    matrix.masked_fill_(special, 0.0)
    chosen = torch.bernoulli(matrix, generator=generator).bool()
    labels[~chosen] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & chosen
    inputs[replaced] = mask_id
    scaled = 0.1 / (1 - 0.8)
    randomised = torch.bernoulli(torch.full(labels.shape, scaled), generator=generator).bool() & chosen & ~replaced
    words = torch.randint(vocab if random_pool is None else len(random_pool), labels.shape, dtype=torch.long,
                          generator=generator)
    if random_pool is not None:
        words = random_pool[words]
    inputs[randomised] = words[randomised]
    return inputs, labels, randomised


def hf_tokenizer(tok) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.mark.parametrize(("probability", "seed"), [(0.15, 0), (0.15, 1), (0.5, 2)])
def test_mlm_mask_is_hf_data_collator_math_with_ordinary_random_tokens(probability, seed):
    tok = tokenizer()
    ids, mask = fixed_ids()
    special = torch.isin(ids, torch.tensor(tok.special_ids)) | (mask == 0)
    ordinary = torch.tensor([i for i in range(tok.vocab_size) if i not in tok.special_ids])
    got, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(seed), probability=probability)
    want, want_labels, randomised = hf_mask_tokens(ids, special, tok.mask_id, tok.vocab_size, probability,
                                                   torch.Generator().manual_seed(seed), random_pool=ordinary)
    assert torch.equal(labels, want_labels) and torch.equal(got, want)
    assert IGNORE_INDEX == -100
    # not vacuous: every kind of position occurs; random ids are never special
    selected = labels != -100
    assert (got[selected] == tok.mask_id).any() and (got[selected] == ids[selected]).any()
    assert randomised.any() and not torch.isin(got[randomised], torch.tensor(tok.special_ids)).any()
    # HF's own pool (the whole vocabulary) gives the same result everywhere except at those positions
    hf_pool, hf_labels, hf_randomised = hf_mask_tokens(ids, special, tok.mask_id, tok.vocab_size, probability,
                                                       torch.Generator().manual_seed(seed))
    assert torch.equal(hf_labels, labels) and torch.equal(hf_randomised, randomised)
    assert torch.equal(hf_pool[~randomised], got[~randomised])


@pytest.mark.parametrize("seed", [0, 3])
def test_mlm_mask_agrees_with_the_installed_hf_collator(seed):
    """The real DataCollatorForLanguageModeling on the same ids and generator: the same selection
    (labels), the same [MASK] positions and the same positions left for random / kept; only the
    random ids differ (HF: any id of the vocabulary; harness: ordinary ids)."""
    tok = tokenizer()
    ids, mask = fixed_ids()
    collator = DataCollatorForLanguageModeling(tokenizer=hf_tokenizer(tok), mlm_probability=0.15)
    collator.generator = torch.Generator().manual_seed(seed)
    hf_inputs, hf_labels = collator.torch_mask_tokens(ids.clone())
    got, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(labels, hf_labels)
    assert torch.equal(got == tok.mask_id, hf_inputs == tok.mask_id)
    assert (labels[mask == 0] == -100).all()  # padding never chosen
    hf_random = (hf_labels != -100) & (hf_inputs != tok.mask_id) & (hf_inputs != ids)
    ours_not_masked = (labels != -100) & (got != tok.mask_id)
    assert hf_random.any() and not (hf_random & ~ours_not_masked).any()


def test_mlm_mask_rates_are_80_10_10_of_15_percent():
    tok = tokenizer()
    ids, mask = tok.encode(REPORTS * 2000)
    got, labels = mlm_mask(ids, mask, tok, generator=torch.Generator().manual_seed(0))
    real = (mask == 1) & ~torch.isin(ids, torch.tensor(tok.special_ids))
    selected = labels != -100
    assert not (selected & ~real).any()
    assert abs(selected.sum() / real.sum() - 0.15) < 0.005
    as_mask = (got[selected] == tok.mask_id).float().mean()
    kept = (got[selected] == ids[selected]).float().mean()  # includes random draws of the same id (1/115)
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01


# ---------------------------------------------------------------- MAE masking and loss, transcribed


def mae_random_masking(n: int, length: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """models_mae.random_masking's mask (1 = removed), as float."""
    len_keep = int(length * (1 - ratio))
    noise = torch.rand(n, length, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    return torch.gather(mask, dim=1, index=ids_restore)


def mae_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    n, c, size, _ = imgs.shape
    h = w = size // p
    x = imgs.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def mae_forward_loss(imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, norm_pix_loss: bool,
                     power: int = 2) -> torch.Tensor:
    target = mae_patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (pred - target).abs() ** power  # MAE: power 2 ((pred - target) ** 2); SimMIM: power 1
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize(("grid", "ratio"), [(8, 0.5), (7, 0.75), (14, 0.6), (3, 0.3)])
def test_one_scale_mask_is_maes_random_masking_with_the_same_generator(grid, ratio):
    want = mae_random_masking(16, grid * grid, ratio, torch.Generator().manual_seed(grid))
    got = multiscale_patch_mask(16, grid, (1,), ratio, torch.Generator().manual_seed(grid))
    assert got.dtype == torch.bool and torch.equal(got.float(), want)
    assert (got.sum(1) == grid * grid - int(grid * grid * (1 - ratio))).all()  # MAE's count, every image
    assert len({tuple(r.tolist()) for r in got}) == 16  # per-sample masks, not one for the batch


def test_larger_scales_hide_whole_cells_chosen_by_maes_rule():
    """Scale s: MAE's rule over the ceil(G / s)^2 cells, each cell s x s patches (cut at the border)."""
    grid, scales, ratio = 7, (1, 2, 4), 0.5
    g = torch.Generator().manual_seed(5)
    got = multiscale_patch_mask(12, grid, scales, ratio, g).view(12, grid, grid)
    g = torch.Generator().manual_seed(5)
    choice = torch.randint(len(scales), (12,), generator=g)
    for k, s in enumerate(scales):
        rows = torch.nonzero(choice == k).flatten()
        if not len(rows):
            continue
        cells = math.ceil(grid / s)
        cell_mask = mae_random_masking(len(rows), cells * cells, ratio, g).view(-1, cells, cells)
        for i, r in enumerate(rows):
            for y in range(grid):
                for x in range(grid):
                    assert bool(got[r, y, x]) == bool(cell_mask[i, y // s, x // s]), (int(r), y, x)
    assert set(choice.tolist()) == {0, 1, 2}  # every scale was exercised


def test_random_masking_is_a_function_of_the_noise():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.4, 0.6, 0.8]])
    assert random_masking(noise, 0.5).tolist() == [[True, False, True, False], [False, False, True, True]]
    assert random_masking(noise[:, :1], 0.5).all()  # int(0.5) = 0 kept: at least one hidden


def simmim_loss(imgs: torch.Tensor, rec: torch.Tensor, patch_mask: torch.Tensor, p: int) -> torch.Tensor:
    """SimMIM.forward's loss; ``patch_mask (N, G, G)``, ``rec`` the reconstructed images."""
    mask = patch_mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous().float()
    loss_recon = torch.nn.functional.l1_loss(imgs, rec, reduction="none")
    return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / imgs.shape[1]


@pytest.mark.parametrize(("norm", "power"), [("l1", 1), ("l2", 2)])
def test_masked_patch_loss_is_maes_forward_loss(norm, power):
    """On the model's own patchify: L2 is MAE's forward_loss (norm_pix_loss off), L1 the same with |.|."""
    cfg = MLMMVMConfig(image_size=32, patch_size=8, width=16, depth=1, heads=2, decoder_depth=1, embed_dim=8,
                       vocab_size=50, max_length=8, batch_size=4, mvm_loss=norm)
    model = MLMMVMModel(cfg, 50, 0)
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(3, 1, 32, 32, generator=g)
    pred = torch.randn(3, 16, 64, generator=g)
    mask = multiscale_patch_mask(3, 4, (1,), 0.75, g)
    assert torch.equal(model.patchify(imgs), mae_patchify(imgs, 8))  # the same row-major patches, 1 channel
    got = masked_patch_loss(pred, model.patchify(imgs), mask, norm)
    want = mae_forward_loss(imgs, pred, mask.float(), 8, norm_pix_loss=False, power=power)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # not vacuous: the visible patches' error is large and left out; norm_pix_loss would change the value
    assert abs(masked_patch_loss(pred, model.patchify(imgs), ~mask, norm) - got) > 1e-3
    assert abs(mae_forward_loss(imgs, pred, mask.float(), 8, norm_pix_loss=True, power=power) - want) > 1e-3
    if norm == "l1":  # and it is SimMIM's pixel-level loss
        simmim = simmim_loss(imgs, model.unpatchify(pred), mask.view(3, 4, 4), 8)
        torch.testing.assert_close(got, simmim, rtol=1e-6, atol=ATOL)


def test_the_model_loss_and_one_adamw_update_match_the_transcription():
    """The model's masked vision modelling term (decoder pixels vs patchify, hidden patches) and one
    AdamW step of the harness's parameter groups, against MAE's forward_loss on the same forward."""
    cfg = MLMMVMConfig(image_size=32, patch_size=8, width=16, depth=1, heads=2, decoder_depth=1, embed_dim=8,
                       vocab_size=50, max_length=8, batch_size=4, dropout=0.0, mvm_loss="l2")
    torch.manual_seed(0)
    model = MLMMVMModel(cfg, 50, 0)
    ref = MLMMVMModel(cfg, 50, 0)
    ref.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(4, 1, 32, 32, generator=g)
    mask = multiscale_patch_mask(4, 4, (1, 2), 0.5, g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.05)

    out, _ = model.encode(model.embed_image(imgs, mask), None)
    loss = model.masked_vision_modelling(out, imgs, mask)
    opt.zero_grad()
    loss.backward()
    opt.step()

    ref_out, _ = ref.encode(ref.embed_image(imgs, mask), None)
    pred = ref.to_pixels(ref.decoder_norm(ref.decoder[0](ref_out))[:, 1:])  # the decoder, written out
    want = mae_forward_loss(imgs, pred, mask.float(), 8, norm_pix_loss=False)
    ref_opt.zero_grad()
    want.backward()
    ref_opt.step()
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=0, atol=ATOL)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=ATOL, msg=name)
