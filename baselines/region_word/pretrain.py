"""Region-word pretraining on a task's training image-report pairs, through the shared Trainer.

The entry point of ``RegionWordMethod.train`` (``BaselineMethod.pretrain`` calls it): the
loop glue between the architecture (``model``) and the objective (``losses.total_loss``).
Steps: (1) the report of every training row (findings + impression); rows without any
report text are a counted skip (recorded in the checkpoint meta as ``skipped_no_text``);
(2) the WordPiece tokenizer trained on those reports and saved as ``workdir/tokenizer.json``
(or MiniLM's); (3) the model and ``optim.EncoderOptimizer``, one AdamW with an image and a text
parameter group that behaves as the paper's two AdamW optimisers (each encoder's gradient clipped
on its own norm; a sampled step updates only the parameters its task uses); (4) ``Trainer.fit`` with
``losses.total_loss``.
Resumable and DDP-ready like every baseline.

Under DDP (W processes, global batch B = W x B/W) the in-batch negatives are the
GLOBAL batch, as on one process: ``losses.gather_pairs`` collects every rank's image and
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

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common import distributed
from baselines.common.backbones import Backbone, build_backbone
from baselines.common.config import to_dict
from baselines.common.data import AugmentConfig, ViewBatches
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import data_meta
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
from baselines.common.train import StepContext, TrainConfig, Trainer, step_decay, unwrap
from baselines.region_word import losses
from baselines.region_word.config import RegionWordConfig
from baselines.region_word.model import RegionWordModel
from baselines.region_word.optim import EncoderOptimizer
from harness.data.images import ImageView
from harness.data.schema import DataError
from harness.encoders import PretrainRequest


def image_backbone(cfg: RegionWordConfig) -> Backbone:
    if cfg.init == "imagenet":
        from baselines.imagenet.weights import imagenet_backbone

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


def region_word_losses(model: torch.nn.Module, batch: dict, cfg: RegionWordConfig, generator: torch.Generator
                       ) -> dict[str, torch.Tensor]:
    """Every loss term of one batch (unweighted), named as in the paper's trainer; ``model`` may be DDP.

    Under DDP ``generator`` must be the same on every rank (it draws the global batch's triplet negatives).
    """
    selected = batch["mlm_labels"] != IGNORE_INDEX
    image_global, regions, sentence, words, mlm_logits = model(batch["images"], batch["input_ids"],
                                                               batch["attention_mask"], batch["mlm_ids"], selected)
    out = losses.matching_losses(image_global, regions, sentence, words, batch["attention_mask"], cfg, generator)
    out["mlm"] = losses.mlm_loss(mlm_logits, batch["mlm_labels"][selected])
    return out


@contextlib.contextmanager
def resting_statistics(module: torch.nn.Module, rest: bool) -> Iterator[None]:
    """With ``rest``, ``module`` runs in eval mode (its BatchNorm statistics stay as they are), then as before."""
    if not rest:
        yield
        return
    was = [m.training for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in zip(module.modules(), was, strict=True):
            m.training = training


def region_word_step(model: torch.nn.Module, batch: dict, cfg: RegionWordConfig, ctx: StepContext,
                     optimizer: EncoderOptimizer) -> tuple[torch.Tensor, dict]:
    """One step's loss and logged terms (the Trainer then does backward and ``optimizer.step()``).

    The paper's sampled task (``losses.is_itm_step``): as in the authors' trainer, a step updates only
    the parameters its task uses (``RegionWordModel.task_parameters`` of the other task rest), and on
    an MLM step, where the authors' image encoder does not even run, its BatchNorm statistics are
    not updated either (the unused loss is multiplied by 0, so the forward kept for DDP changes
    nothing else). ``model`` may be DDP.
    """
    itm_step = losses.is_itm_step(cfg, ctx.seed, ctx.step)
    unused = {None: None, True: "mlm", False: "itm"}[itm_step]
    optimizer.rest(unwrap(model).task_parameters(unused) if unused else ())
    with resting_statistics(unwrap(model).backbone, rest=itm_step is False):
        # rank 0's stream on every rank: the triplet negatives of the global batch are one process's
        terms = region_word_losses(model, batch, cfg, step_generator(ctx.seed, ctx.step, 0, 2))
    logged = {k: v.detach() for k, v in terms.items()}
    if itm_step is not None:
        logged["itm_step"] = float(itm_step)
    return losses.total_loss(terms, cfg, itm_step), logged


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
    rank_batch = cfg.rank_batch(info.world_size, "region-word")
    steps = cfg.total_steps(len(rows))
    steps_per_epoch = len(rows) / cfg.batch_size

    tokenizer = tokenizer_for(cfg, texts, Path(request.workdir))
    input_ids, attention_mask = tokenizer.encode(texts)  # (N, L) once; batches slice and trim

    seed_all(request.seed)
    model = build_model(cfg, tokenizer)
    image_params = [p for n, p in model.named_parameters() if n.startswith(("backbone.", "region_proj.",
                                                                           "global_proj."))]
    image_ids = {id(p) for p in image_params}
    text_params = [p for p in model.parameters() if id(p) not in image_ids]
    optimizer = EncoderOptimizer(image_params, text_params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 clip=cfg.grad_clip)  # clipped per encoder, as the authors' two optimisers
    scheduler = step_decay(optimizer, tuple(round(e * steps_per_epoch) for e in cfg.lr_decay_epochs))

    sampler = StepSampler(len(rows), rank_batch, seed=request.seed, rank=info.rank, world_size=info.world_size)
    view = AugmentConfig(scale=cfg.scale, rotation=cfg.rotation, hflip=False, brightness=cfg.brightness,
                         contrast=cfg.contrast)  # no flip: reports name the side ("left pleural effusion")
    views = ViewBatches(ImageView(data.images, rows), sampler, (view,), imagenet_preprocess(cfg.image_size, 3),
                        device=request.device)
    global_sampler = StepSampler(len(rows), cfg.batch_size, seed=request.seed)  # one process's view of the stream
    batches = PairBatches(views, global_sampler, input_ids, attention_mask, tokenizer, cfg.mlm_probability)

    meta = {"method": "region-word", "config": to_dict(cfg), "card": card,
            "text": {"tokenizer": TOKENIZER_FILE if cfg.text_model == "scratch" else cfg.text_model,
                     "vocab_size": tokenizer.vocab_size},
            "data": data_meta(data, num_images=len(data.images), num_pairs=len(rows),
                              skipped_no_text=int(len(data.images) - len(rows)))}

    def step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict]:
        return region_word_step(model, batch, cfg, ctx, optimizer)

    # grad_clip 0 for the Trainer: EncoderOptimizer clips each encoder's gradient on its own norm
    trainer = Trainer(model, optimizer, TrainConfig.for_method(cfg, request, steps, grad_clip=0.0),
                      request.workdir, scheduler=scheduler, meta=meta)
    return trainer.fit(step, batches, sampler=sampler)
