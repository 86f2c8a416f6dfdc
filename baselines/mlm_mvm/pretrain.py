"""MLM-MVM pretraining on paired, image-only and text-only data, through the shared Trainer.

The entry point of ``MLMMVMMethod.train`` (``BaselineMethod.pretrain`` calls it): the
loop glue between the architecture (``model``) and the objective (``losses.total_loss``).
Steps: (1) ``streams`` splits the data into paired rows, image-only rows and text-only
reports as ``mixing`` says (counts go to the checkpoint meta); (2) a WordPiece tokenizer
on every report used, saved as ``workdir/tokenizer.json``; (3) every step draws each
non-empty part with its own sampler, its size proportional to the part's share of the
data; (4) ``Trainer.fit``.

Under DDP each part's sampler gives every rank its slice of the global batch; the
contrastive term's negatives are the global batch's paired studies
(``MLMMVMModel.image_report_alignment`` gathers them). What stays per rank, as in any
data-parallel run: augmentations and MVM / MLM masks (drawn from the rank's own
stream), dropout, and the MVM / MLM losses (means over the rank's hidden patches and
masked tokens, then averaged over ranks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common import distributed
from baselines.common.config import to_dict
from baselines.common.data import AugmentConfig, augment, normalize
from baselines.common.method import data_meta
from baselines.common.sampling import StepSampler
from baselines.common.seeding import mix_seed, seed_all
from baselines.common.text import TOKENIZER_FILE, TextTokenizer, mlm_mask, report_texts, workdir_tokenizer
from baselines.common.train import StepContext, TrainConfig, Trainer, warmup_cosine
from baselines.mlm_mvm.config import MLMMVMConfig
from baselines.mlm_mvm.losses import multiscale_patch_mask, total_loss
from baselines.mlm_mvm.model import MLMMVMModel
from harness.data.schema import DataError
from harness.encoders import Preprocess, PretrainRequest


def preprocess_for(cfg: MLMMVMConfig) -> Preprocess:
    """Grey-native input in [-1, 1] (JoImTeRNet's Normalize(0.5, 0.5)); hidden pixels read as mid-grey 0."""
    return Preprocess(image_size=cfg.image_size, channels=1, mean=(0.5,), std=(0.5,))


@dataclass
class Streams:
    """What one mixing setting trains on: image rows (paired / image-only) and report texts."""

    paired_images: np.ndarray  # rows of the image source
    paired_texts: list[str]
    image_rows: np.ndarray  # image-only rows of the image source
    texts: list[str]  # text-only reports
    counts: dict[str, int]


def streams(request: PretrainRequest, cfg: MLMMVMConfig) -> Streams:
    """Split the training data as ``cfg.mixing`` says (see ``baselines.mlm_mvm.config``)."""
    data = request.data
    reports = report_texts(data.frame) if cfg.mixing != "cross-source unpaired" else [""] * len(data.frame)
    with_text = np.flatnonzero([bool(t) for t in reports])
    without_text = np.flatnonzero([not t for t in reports])
    counts = {"images": len(data.frame), "images_without_report": int(len(without_text))}
    if cfg.mixing == "paired":
        if len(with_text) < 2:
            raise DataError(f"mlm-mvm: {data.dataset} has {len(with_text)} training images with report text; "
                            "mixing 'paired' needs at least 2")
        counts["skipped_no_text"] = int(len(without_text))
        return Streams(with_text, [reports[i] for i in with_text], np.array([], np.int64), [], counts)
    if cfg.mixing == "paired+unpaired":
        order = np.random.default_rng(mix_seed(request.seed, 0x3A1)).permutation(with_text)
        n_unpaired = int(round(cfg.unpaired_fraction * len(order)))
        paired, unpaired = order[n_unpaired:], order[:n_unpaired]
        image_only, text_only = unpaired[: n_unpaired // 2], unpaired[n_unpaired // 2:]  # never both halves
        if len(paired) < 2:
            raise DataError(f"mlm-mvm: {len(paired)} paired studies left in {data.dataset}; need at least 2")
        return Streams(np.sort(paired), [reports[i] for i in np.sort(paired)],
                       np.sort(np.concatenate([image_only, without_text])), [reports[i] for i in np.sort(text_only)],
                       counts)
    if request.load_source is None:
        raise ValueError("mlm-mvm: mixing 'cross-source unpaired' needs request.load_source (the runner's)")
    other = request.load_source(cfg.text_source)
    texts = [t for t in report_texts(other.frame) if t]
    if not texts:
        raise DataError(f"mlm-mvm: text_source {cfg.text_source} has no report text (findings/impression)")
    counts.update(text_source=cfg.text_source, text_source_reports=len(texts))
    return Streams(np.array([], np.int64), [], np.arange(len(data.frame)), texts, counts)


def part_sizes(cfg: MLMMVMConfig, s: Streams, world_size: int) -> dict[str, int]:
    """Per-rank batch size of each non-empty part, proportional to its data (at least 2)."""
    sizes = {"paired": len(s.paired_images), "images": len(s.image_rows), "texts": len(s.texts)}
    total = sum(sizes.values())
    per_rank = cfg.batch_size // world_size
    return {k: max(2, round(per_rank * n / total)) for k, n in sizes.items() if n}


class MixedBatches:
    """A Trainer batch function: this step's paired, image-only and text-only parts."""

    def __init__(self, images: Any, s: Streams, samplers: dict[str, StepSampler], tokenizer: TextTokenizer,
                 cfg: MLMMVMConfig, device: str | torch.device) -> None:
        self.images, self.s, self.samplers, self.tokenizer, self.cfg = images, s, samplers, tokenizer, cfg
        self.device = torch.device(device)
        self.view = AugmentConfig(scale=cfg.scale, rotation=cfg.rotation, hflip=False, brightness=cfg.brightness,
                                  contrast=cfg.contrast)
        self.preprocess = preprocess_for(cfg)
        self.grid = cfg.image_size // cfg.patch_size

    def _images(self, rows: np.ndarray, ctx: StepContext, stream: int) -> dict[str, torch.Tensor]:
        raw = torch.from_numpy(np.asarray(self.images[rows])).to(self.device)
        generator = ctx.generator(stream)
        x = normalize(augment(raw, self.view, self.cfg.image_size, generator), self.preprocess)
        mask = multiscale_patch_mask(len(rows), self.grid, self.cfg.mvm_scales, self.cfg.mvm_ratio, generator)
        return {"images": x, "patch_mask": mask}

    def _texts(self, texts: list[str], ctx: StepContext, stream: int) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenizer.encode(texts)
        masked, labels = mlm_mask(ids, mask, self.tokenizer, generator=ctx.generator(stream),
                                  probability=self.cfg.mlm_probability)
        return {"input_ids": ids, "attention_mask": mask, "mlm_ids": masked, "mlm_labels": labels}

    def __call__(self, ctx: StepContext) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        if "paired" in self.samplers:
            idx = self.samplers["paired"].indices(ctx.step)
            batch["paired"] = {**self._images(self.s.paired_images[idx], ctx, 0),
                               **self._texts([self.s.paired_texts[i] for i in idx], ctx, 1)}
        if "images" in self.samplers:
            batch["images"] = self._images(self.s.image_rows[self.samplers["images"].indices(ctx.step)], ctx, 2)
        if "texts" in self.samplers:
            idx = self.samplers["texts"].indices(ctx.step)
            batch["texts"] = self._texts([self.s.texts[i] for i in idx], ctx, 3)
        return batch


def pretrain(request: PretrainRequest, cfg: MLMMVMConfig, card: dict) -> Path:
    """Train into ``request.workdir``; return the final checkpoint."""
    info = distributed.info()
    cfg.rank_batch(info.world_size, "mlm-mvm")  # refuses a batch the ranks cannot share; part_sizes splits it
    s = streams(request, cfg)
    workdir = Path(request.workdir)
    tokenizer = workdir_tokenizer(s.paired_texts + s.texts, cfg.vocab_size, cfg.max_length, workdir)
    sizes = part_sizes(cfg, s, info.world_size)
    lengths = {"paired": len(s.paired_images), "images": len(s.image_rows), "texts": len(s.texts)}
    samplers = {k: StepSampler(lengths[k], b, seed=mix_seed(request.seed, i), rank=info.rank,
                               world_size=info.world_size) for i, (k, b) in enumerate(sizes.items())}
    n_items = sum(lengths.values())
    steps = cfg.total_steps(n_items)

    seed_all(request.seed)
    model = MLMMVMModel(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n.endswith(("_pos", "_cls", "mask_token"))]
    ids = {id(p) for p in no_decay}
    decay = [p for p in model.parameters() if id(p) not in ids]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = warmup_cosine(optimizer, steps, cfg.warmup_steps)
    batches = MixedBatches(request.data.images, s, samplers, tokenizer, cfg, request.device)
    meta = {"method": "mlm-mvm", "config": to_dict(cfg), "card": card,
            "text": {"tokenizer": TOKENIZER_FILE, "vocab_size": tokenizer.vocab_size},
            "data": data_meta(request.data, mixing=cfg.mixing, part_sizes=sizes, **s.counts,
                              paired=lengths["paired"], image_only=lengths["images"], text_only=lengths["texts"])}

    def step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict]:
        terms = model(batch)
        return total_loss(terms, cfg), {k: v.detach() for k, v in terms.items()}

    trainer = Trainer(model, optimizer, TrainConfig.for_method(cfg, request, steps, grad_clip=cfg.grad_clip), workdir,
                      scheduler=scheduler, meta=meta)
    return trainer.fit(step, batches, sampler=samplers[next(iter(samplers))])
