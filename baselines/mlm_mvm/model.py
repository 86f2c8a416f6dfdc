"""A single-stream image-report transformer with MLM and multi-scale masked vision modelling.

After Wang et al., "Self-supervised Image-text Pre-training With Mixed Data in
Chest X-rays" (arXiv 2103.16022; docs/methods.md section 3). The paper's
architecture is not public: this one is the HARNESS'S DESIGN. One transformer
reads a sequence of image patch tokens ([IMG] + ``G x G`` patches) and/or report
tokens ([CLS] ... [SEP]); a modality embedding tells them apart. So the same
weights serve the three kinds of pretraining batch:

- paired: image + report in one stream; masked patches are regenerated and masked
  words predicted with the other modality in view (plus, harness choice, an
  image-report contrastive term on the separately encoded pair);
- image-only: masked vision modelling alone;
- text-only: masked language modelling alone.

A light pixel decoder (transformer blocks on the image tokens, then a linear map
to the patch's pixels) regenerates hidden patches; ``regenerate`` uses it at test time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import distributed
from baselines.common.text import IGNORE_INDEX, MLMHead
from baselines.mlm_mvm import losses
from baselines.mlm_mvm.config import MLMMVMConfig

IMAGE, TEXT = 0, 1  # modality embedding ids


def _blocks(cfg: MLMMVMConfig, depth: int) -> nn.ModuleList:
    return nn.ModuleList(nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, cfg.dropout,
                                                    activation="gelu", batch_first=True, norm_first=True)
                         for _ in range(depth))


class MLMMVMModel(nn.Module):
    """Single-stream encoder, pixel decoder, MLM head and (paired data only) alignment heads."""

    def __init__(self, cfg: MLMMVMConfig, vocab_size: int, pad_id: int, channels: int = 1) -> None:
        super().__init__()
        self.cfg, self.channels = cfg, channels
        self.grid = cfg.image_size // cfg.patch_size
        patch_pixels = cfg.patch_size ** 2 * channels
        self.patch_embed = nn.Linear(patch_pixels, cfg.width)
        self.image_cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.image_pos = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, cfg.width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))  # stands in for a hidden patch
        self.token_embed = nn.Embedding(vocab_size, cfg.width, padding_idx=pad_id)
        self.text_pos = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.width))
        self.modality = nn.Embedding(2, cfg.width)
        self.blocks, self.norm = _blocks(cfg, cfg.depth), nn.LayerNorm(cfg.width)
        self.decoder, self.decoder_norm = _blocks(cfg, cfg.decoder_depth), nn.LayerNorm(cfg.width)
        self.to_pixels = nn.Linear(cfg.width, patch_pixels)
        self.mlm_head = MLMHead(cfg.width, vocab_size)
        # Alignment heads exist only when there are pairs to train them (DDP needs every parameter used).
        self.aligned = cfg.weight_itc > 0 and cfg.mixing != "cross-source unpaired"
        if self.aligned:
            self.image_proj, self.text_proj = nn.Linear(cfg.width, cfg.embed_dim), nn.Linear(cfg.width, cfg.embed_dim)
        for p in (self.image_cls, self.image_pos, self.mask_token, self.text_pos):
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def num_features(self) -> int:
        return self.cfg.embed_dim if self.aligned else self.cfg.width

    # ------------------------------------------------------------------ tokens
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, N, p*p*C)`` row-major patches."""
        p = self.cfg.patch_size
        x = F.unfold(images, kernel_size=p, stride=p)  # (B, C*p*p, N)
        return x.transpose(1, 2)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, N, p*p*C) -> (B, C, S, S)``."""
        p, s = self.cfg.patch_size, self.cfg.image_size
        return F.fold(patches.transpose(1, 2), output_size=(s, s), kernel_size=p, stride=p)

    def embed_image(self, images: torch.Tensor, patch_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, S, S), (B, N) bool -> (B, 1 + N, W)``: hidden patches become the mask token."""
        x = self.patch_embed(self.patchify(images))  # (B, N, W)
        if patch_mask is not None:
            x = torch.where(patch_mask[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.image_cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, W)
        return x + self.image_pos + self.modality.weight[IMAGE]

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, T, W)``."""
        return self.token_embed(input_ids) + self.text_pos[:, :input_ids.shape[1]] + self.modality.weight[TEXT]

    # ------------------------------------------------------------------ the stream
    def encode(self, image_tokens: torch.Tensor | None, text_tokens: torch.Tensor | None,
               attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One pass over [image tokens ; text tokens]; returns the two parts' outputs (either may be None)."""
        parts = [t for t in (image_tokens, text_tokens) if t is not None]
        x = torch.cat(parts, dim=1)  # (B, L, W)
        padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        if text_tokens is not None and attention_mask is not None:
            padding[:, x.shape[1] - text_tokens.shape[1]:] = attention_mask == 0
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        x = self.norm(x)
        n_image = image_tokens.shape[1] if image_tokens is not None else 0
        return (x[:, :n_image] if image_tokens is not None else None,
                x[:, n_image:] if text_tokens is not None else None)

    def decode_pixels(self, image_out: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N, W) -> (B, N, p*p*C)``: every patch's pixels, hidden or not."""
        x = image_out
        for block in self.decoder:
            x = block(x)
        return self.to_pixels(self.decoder_norm(x)[:, 1:])

    def image_vector(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, num_features)`` from the [IMG] token of an image-only pass."""
        out, _ = self.encode(self.embed_image(images, None), None)
        return self.image_proj(out[:, 0]) if self.aligned else out[:, 0]

    def report_vector(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, num_features)`` from the [CLS] token of a text-only pass."""
        _, out = self.encode(None, self.embed_text(input_ids), attention_mask)
        return self.text_proj(out[:, 0]) if self.aligned else out[:, 0]

    # ------------------------------------------------------------------ pretraining tasks
    def masked_vision_modelling(self, image_out: torch.Tensor, images: torch.Tensor, patch_mask: torch.Tensor
                                ) -> torch.Tensor:
        return losses.masked_patch_loss(self.decode_pixels(image_out), self.patchify(images), patch_mask,
                                        self.cfg.mvm_loss)

    def masked_language_modelling(self, text_out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        selected = labels != IGNORE_INDEX  # (B, T); the vocabulary head runs on these positions only
        return losses.masked_language_loss(self.mlm_head(text_out[selected]), labels[selected])

    def image_report_alignment(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                               ) -> torch.Tensor:
        """The contrastive term on separately encoded pairs, with the GLOBAL batch's negatives.

        Under DDP every rank gathers all ranks' ``(B/W, E)`` vectors (with gradient) and scores
        the whole ``(B, B)`` matrix: its loss is one process's, the gather's backward sums the
        ranks' gradients for each rank's rows and DDP averages them, so the gradients are too.
        """
        image_vectors = distributed.all_gather_with_grad(self.image_vector(images))  # (B, E)
        report_vectors = distributed.all_gather_with_grad(self.report_vector(input_ids, attention_mask))  # (B, E)
        return losses.image_report_contrastive_loss(image_vectors, report_vectors, self.cfg.temperature)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The loss terms of one mixed step (one ``forward``, so DDP sees a single pass).

        ``batch`` holds any of ``paired`` (images, patch_mask, input_ids, attention_mask,
        mlm_ids, mlm_labels), ``images`` (images, patch_mask) and ``texts`` (input_ids,
        attention_mask, mlm_ids, mlm_labels). Each part contributes its own modality's
        terms only: an image-only part never touches the text side, and vice versa.
        """
        terms: dict[str, torch.Tensor] = {}
        if (pair := batch.get("paired")) is not None:
            image_out, text_out = self.encode(self.embed_image(pair["images"], pair["patch_mask"]),
                                              self.embed_text(pair["mlm_ids"]), pair["attention_mask"])
            terms["mvm_paired"] = self.masked_vision_modelling(image_out, pair["images"], pair["patch_mask"])
            terms["mlm_paired"] = self.masked_language_modelling(text_out, pair["mlm_labels"])
            if self.aligned:
                terms["itc"] = self.image_report_alignment(pair["images"], pair["input_ids"], pair["attention_mask"])
        if (part := batch.get("images")) is not None:
            image_out, _ = self.encode(self.embed_image(part["images"], part["patch_mask"]), None)
            terms["mvm_image"] = self.masked_vision_modelling(image_out, part["images"], part["patch_mask"])
        if (part := batch.get("texts")) is not None:
            _, text_out = self.encode(None, self.embed_text(part["mlm_ids"]), part["attention_mask"])
            terms["mlm_text"] = self.masked_language_modelling(text_out, part["mlm_labels"])
        return terms

