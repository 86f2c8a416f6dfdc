"""Region-word pretraining on a task's training image-report pairs, through the shared Trainer.

Called by ``RegionWordMethod.pretrain``. Steps: (1) the report of every training
row (findings + impression); rows without any report text are a counted skip
(recorded in the checkpoint meta as ``skipped_no_text``); (2) the WordPiece
tokenizer trained on those reports and saved as ``workdir/tokenizer.json`` (or
MiniLM's); (3) the model and one AdamW with an image and a text parameter group
(the paper's two AdamW optimisers, same settings); (4) ``Trainer.fit`` with the
summed losses. Resumable and DDP-ready like every baseline.

Under DDP (W processes, global batch B = W x B/W) the in-batch negatives are the
GLOBAL batch, as on one process: ``gather_pairs`` collects every rank's image and
text features (with gradient) and every rank scores all B x B pairs. Each rank's
ITM loss is then the one-process loss itself; the gather's backward sums the W
ranks' gradients for each rank's own rows and DDP averages over the W ranks, so the
parameter gradients equal one process's. The randomness of those terms is drawn
for the global batch from rank 0's streams (triplet negatives; MLM masks, each rank
keeping its rows), so it is one process's too. What still differs by rank, by
design of data-parallel training: the image augmentation (each rank augments only
the images it loads), BatchNorm statistics (per rank), dropout, and the MLM loss
(a mean over each rank's masked tokens, then over ranks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common import distributed
from baselines.common.backbones import Backbone, build_backbone
from baselines.common.config import to_dict
from baselines.common.data import AugmentConfig, ViewBatches
from baselines.common.encoder import imagenet_preprocess
from baselines.common.sampling import StepSampler
from baselines.common.seeding import seed_all, step_generator
from baselines.common.text import (
    IGNORE_INDEX,
    TOKENIZER_FILE,
    TextTokenizer,
    build_text_encoder,
    mlm_mask,
    pretrained_tokenizer,
    report_texts,
    workdir_tokenizer,
)
from baselines.common.train import StepContext, TrainConfig, Trainer, step_decay
from baselines.region_word import losses
from baselines.region_word.config import RegionWordConfig
from baselines.region_word.model import RegionWordModel, word_mask
from harness.data.schema import DataError
from harness.encoders import PretrainRequest


def image_backbone(cfg: RegionWordConfig) -> Backbone:
    if cfg.init == "imagenet":
        from baselines.imagenet import imagenet_backbone

        return imagenet_backbone(cfg.backbone, image_size=cfg.image_size)
    return build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)


def build_model(cfg: RegionWordConfig, tokenizer: TextTokenizer, *, pretrained_text: bool = True,
                backbone: Backbone | None = None) -> RegionWordModel:
    """The model for ``cfg`` (``pretrained_text=False``: MiniLM's architecture only, weights to be loaded)."""
    text = build_text_encoder(cfg.text_model, vocab_size=tokenizer.vocab_size, hidden=cfg.text_hidden,
                              layers=cfg.text_layers, heads=cfg.text_heads, ffn=cfg.text_ffn,
                              dropout=cfg.text_dropout, max_positions=max(512, cfg.max_length),
                              pretrained=pretrained_text)
    return RegionWordModel(backbone if backbone is not None else image_backbone(cfg), text, cfg.embed_dim)


def tokenizer_for(cfg: RegionWordConfig, texts: list[str], workdir: Path) -> TextTokenizer:
    """A pretrained text model's own tokenizer, or the WordPiece tokenizer of ``workdir`` (trained and saved
    on first use)."""
    if cfg.text_model != "scratch":
        return pretrained_tokenizer(cfg.text_model, cfg.max_length)
    return workdir_tokenizer(texts, cfg.vocab_size, cfg.max_length, workdir)


class _Rows:
    """``images`` restricted to ``rows`` (the pairs that have a report), still indexable by arrays."""

    def __init__(self, images: Any, rows: np.ndarray) -> None:
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self.images[self.rows[idx]]


class PairBatches:
    """A Trainer batch function: one augmented view per image, its report's tokens, and an MLM-masked copy.

    The images are this rank's (``views`` holds the rank-aware sampler). The reports are
    tokenised for the step's GLOBAL batch (``global_sampler``: the same stream seen by one
    process) and this rank keeps its rows: so every rank trims to the same length (the
    word features are gathered across ranks) and the MLM masks, drawn from rank 0's
    stream, are the ones one process would draw.
    """

    def __init__(self, views: ViewBatches, global_sampler: StepSampler, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, tokenizer: TextTokenizer, mlm_probability: float) -> None:
        self.views, self.global_sampler = views, global_sampler
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.tokenizer, self.mlm_probability = tokenizer, mlm_probability

    def __call__(self, ctx: StepContext) -> dict[str, Any]:
        batch = self.views(ctx)
        idx = batch["indices"]  # (B/W,) this rank's rows of the global batch
        every = torch.from_numpy(self.global_sampler.indices(ctx.step))  # (B,) all ranks' rows, in rank order
        mine = slice(ctx.rank * len(idx), (ctx.rank + 1) * len(idx))
        if not torch.equal(every[mine], idx):
            raise RuntimeError(f"region-word: rank {ctx.rank}'s sampler disagrees with the global batch at step "
                               f"{ctx.step}")
        mask = self.attention_mask[every]
        length = int(mask.sum(1).max())  # trim the padding no report of the global batch needs
        ids, mask = self.input_ids[every, :length], mask[:, :length]
        masked, labels = mlm_mask(ids, mask, self.tokenizer, generator=step_generator(ctx.seed, ctx.step, 0, 1),
                                  probability=self.mlm_probability)
        return {"images": batch["views"][0], "input_ids": ids[mine], "attention_mask": mask[mine],
                "mlm_ids": masked[mine], "mlm_labels": labels[mine]}


def gather_pairs(*features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``(B/W, ...)`` features -> ``(B, ...)`` in rank order, with gradient (identity on one process).

    The one place region-word talks to other processes: the matching losses then see the
    global batch's negatives (see the module docstring for why the gradients are exact).
    """
    return tuple(distributed.all_gather_with_grad(f) for f in features)


def region_word_losses(model: torch.nn.Module, batch: dict, cfg: RegionWordConfig, generator: torch.Generator
                       ) -> dict[str, torch.Tensor]:
    """Every loss term of one batch (unweighted), named as in the paper's trainer; ``model`` may be DDP.

    Under DDP ``generator`` must be the same on every rank (it draws the global batch's triplet negatives).
    """
    selected = batch["mlm_labels"] != IGNORE_INDEX
    image_global, regions, sentence, words, mlm_logits = model(batch["images"], batch["input_ids"],
                                                               batch["attention_mask"], batch["mlm_ids"], selected)
    out = matching_losses(image_global, regions, sentence, words, batch["attention_mask"], cfg, generator)
    out["mlm"] = losses.mlm_loss(mlm_logits, batch["mlm_labels"][selected])
    return out


def matching_losses(image_global: torch.Tensor, regions: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor,
                    attention_mask: torch.Tensor, cfg: RegionWordConfig, generator: torch.Generator
                    ) -> dict[str, torch.Tensor]:
    """The ITM terms (sentence and word-region CE, triplets) of the GLOBAL batch: this rank's ``(B/W, ...)``
    features are gathered with every other rank's, so the negatives are those one process would see."""
    image_global, regions, sentence, words = gather_pairs(image_global, regions, sentence, words)
    words_used = word_mask(distributed.concat_all_gather(attention_mask))  # (B, L)
    sent_logits = losses.sentence_logits(image_global, sentence, cfg.gamma3)  # (B_img, B_txt)
    word_scores = losses.word_region_scores(words, words_used, regions, cfg.gamma1, cfg.gamma2).T  # (B_img, B_txt)
    n = sent_logits.shape[0]
    negatives = (losses.random_negatives(n, generator), losses.random_negatives(n, generator))
    out: dict[str, torch.Tensor] = {}
    out["sent_i2t"], out["sent_t2i"] = losses.bidirectional_ce(sent_logits)
    out["word_i2t"], out["word_t2i"] = losses.bidirectional_ce(cfg.gamma3 * word_scores)
    out["trip_sent_img"], out["trip_sent_txt"] = losses.triplet_from_similarity(sent_logits / cfg.gamma3, negatives,
                                                                               cfg.margin)
    out["trip_word_img"], out["trip_word_txt"] = losses.triplet_from_similarity(word_scores, negatives, cfg.margin)
    out["i2t_top1"] = (sent_logits.argmax(1) == torch.arange(n, device=sent_logits.device)).float().mean()
    return out


def total_loss(terms: dict[str, torch.Tensor], cfg: RegionWordConfig, itm_step: bool | None = None
               ) -> torch.Tensor:
    """The weighted sum; ``itm_step`` True / False keeps only the ITM / MLM part (the paper's sampled steps)."""
    itm = (cfg.weight_sentence * (terms["sent_i2t"] + terms["sent_t2i"])
           + cfg.weight_word * (terms["word_i2t"] + terms["word_t2i"])
           + cfg.weight_triplet * (terms["trip_sent_img"] + terms["trip_sent_txt"] + terms["trip_word_img"]
                                   + terms["trip_word_txt"]))
    mlm = cfg.weight_mlm * terms["mlm"]
    if itm_step is None:
        return itm + mlm
    # The unused part is multiplied by 0, not skipped: every parameter still gets a (zero) gradient, which
    # DDP needs, and the graph is the same on every rank.
    return itm + 0.0 * mlm if itm_step else 0.0 * itm + mlm


def is_itm_step(cfg: RegionWordConfig, seed: int, step: int) -> bool | None:
    """The paper's per-step task draw, identical on every rank (rank 0's stream); None when summing."""
    if cfg.itm_probability is None:
        return None
    return bool(torch.rand((), generator=step_generator(seed, step, 0, 7)) < cfg.itm_probability)


def pretrain(request: PretrainRequest, cfg: RegionWordConfig, card: dict) -> Path:
    """Train on ``request.data`` (images + reports) into ``request.workdir``; return the final checkpoint."""
    info = distributed.info()
    data = request.data
    texts = report_texts(data.frame)
    if len(texts) != len(data.images):
        raise ValueError(f"region-word: {len(texts)} reports for {len(data.images)} images in {data.dataset}")
    rows = np.flatnonzero([bool(t) for t in texts])
    if len(rows) < 2:
        raise DataError(f"region-word: {data.dataset} has {len(rows)} training images with report text "
                         "(findings/impression); image-text pretraining needs at least 2")
    texts = [texts[i] for i in rows]
    if cfg.batch_size % info.world_size:
        raise ValueError(f"region-word: batch_size {cfg.batch_size} not divisible by {info.world_size} processes")
    steps = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * len(rows) / cfg.batch_size)
    steps_per_epoch = len(rows) / cfg.batch_size

    tokenizer = tokenizer_for(cfg, texts, Path(request.workdir))
    input_ids, attention_mask = tokenizer.encode(texts)  # (N, L) once; batches slice and trim

    seed_all(request.seed)
    model = build_model(cfg, tokenizer)
    image_params = [p for n, p in model.named_parameters() if n.startswith(("backbone.", "region_proj.",
                                                                           "global_proj."))]
    image_ids = {id(p) for p in image_params}
    text_params = [p for p in model.parameters() if id(p) not in image_ids]
    optimizer = torch.optim.AdamW([{"params": image_params}, {"params": text_params}], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = step_decay(optimizer, tuple(round(e * steps_per_epoch) for e in cfg.lr_decay_epochs))

    sampler = StepSampler(len(rows), cfg.batch_size // info.world_size, seed=request.seed, rank=info.rank,
                          world_size=info.world_size)
    view = AugmentConfig(scale=cfg.scale, rotation=cfg.rotation, hflip=False, brightness=cfg.brightness,
                         contrast=cfg.contrast)  # no flip: reports name the side ("left pleural effusion")
    views = ViewBatches(_Rows(data.images, rows), sampler, (view,), imagenet_preprocess(cfg.image_size, 3),
                        device=request.device)
    global_sampler = StepSampler(len(rows), cfg.batch_size, seed=request.seed)  # one process's view of the stream
    batches = PairBatches(views, global_sampler, input_ids, attention_mask, tokenizer, cfg.mlm_probability)

    train_cfg = TrainConfig(steps=steps, seed=request.seed, device=request.device, grad_clip=cfg.grad_clip,
                            checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, amp=cfg.amp,
                            progress=request.progress)
    meta = {"method": "region-word", "config": to_dict(cfg), "card": card,
            "text": {"tokenizer": TOKENIZER_FILE if cfg.text_model == "scratch" else cfg.text_model,
                     "vocab_size": tokenizer.vocab_size},
            "data": {"dataset": data.dataset, "fingerprint": data.fingerprint, "data_source": data.data_source,
                     "num_images": len(data.images), "num_pairs": len(rows),
                     "skipped_no_text": int(len(data.images) - len(rows))}}

    def step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict]:
        # rank 0's stream on every rank: the triplet negatives of the global batch are one process's
        terms = region_word_losses(model, batch, cfg, step_generator(ctx.seed, ctx.step, 0, 2))
        itm_step = is_itm_step(cfg, ctx.seed, ctx.step)
        logged = {k: v.detach() for k, v in terms.items()}
        if itm_step is not None:
            logged["itm_step"] = float(itm_step)
        return total_loss(terms, cfg, itm_step), logged

    trainer = Trainer(model, optimizer, train_cfg, request.workdir, scheduler=scheduler, meta=meta)
    return trainer.fit(step, batches, sampler=sampler)
