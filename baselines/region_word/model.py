"""The region-word model: an image encoder and a text encoder projected into one joint space.

JoImTeRNet (Ji, Shaikh et al., MLMI 2021; docs/methods.md section 2) with a
harness backbone: the backbone's last-stage map gives the regions (a 1x1
projection = ``Linear`` on each region row) and its pooled vector the global
image feature (``Linear``); the text encoder's token outputs give the word
vectors (``Linear``) and its [CLS] output the sentence vector (``Linear``), all
of width ``embed_dim``. An MLM head on the token outputs trains the text side.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common.backbones import Backbone
from baselines.common.text import BertTextEncoder, MLMHead


class RegionWordModel(nn.Module):
    """Image + text encoders with their joint-space projections and the MLM head."""

    def __init__(self, backbone: Backbone, text: BertTextEncoder, embed_dim: int) -> None:
        super().__init__()
        self.backbone, self.text = backbone, text
        self.embed_dim = embed_dim
        self.region_proj = nn.Linear(backbone.num_features, embed_dim)  # the paper's 1x1 conv on the regions
        self.global_proj = nn.Linear(backbone.num_features, embed_dim)
        self.word_proj = nn.Linear(text.hidden_size, embed_dim)
        self.sentence_proj = nn.Linear(text.hidden_size, embed_dim)  # on [CLS] (the paper's pool='cls')
        self.mlm_head = MLMHead(text.hidden_size, text.vocab_size)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only ``task`` uses ("itm": the image side and the word and sentence projections;
        "mlm": the MLM head): what rests on the other task's steps (``optim.EncoderOptimizer``)."""
        parts = {"itm": (self.backbone, self.region_proj, self.global_proj, self.word_proj, self.sentence_proj),
                 "mlm": (self.mlm_head,)}
        if task not in parts:
            raise ValueError(f"region-word: task must be 'itm' or 'mlm', got {task!r}")
        return [p for module in parts[task] for p in module.parameters()]

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, S, S) -> (global (B, E), regions (B, R, E))`` from one backbone pass."""
        feature_map = self.backbone.feature_map(images)  # (B, D, h, w)
        pooled = feature_map.mean(dim=(2, 3))  # (B, D), as Backbone.forward for CNNs
        regions = feature_map.flatten(2).transpose(1, 2)  # (B, R, D), row-major
        return self.global_proj(pooled), self.region_proj(regions)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L), (B, L) -> (sentence (B, E), words (B, L, E))``."""
        tokens, cls = self.text(input_ids, attention_mask)
        return self.sentence_proj(cls), self.word_proj(tokens)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                mlm_ids: torch.Tensor, mlm_selected: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One training pass (through ``forward`` so DDP syncs it): image global, regions, sentence, words,
        MLM logits on the masked copy of the reports at its selected positions."""
        image_global, regions = self.image_features(images)
        sentence, words = self.text_features(input_ids, attention_mask)
        return image_global, regions, sentence, words, self.mlm_logits(mlm_ids, attention_mask, mlm_selected)

    def mlm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor
                   ) -> torch.Tensor:
        """``(B, L) -> (M, V)`` vocabulary logits at the ``M`` selected (masked) positions only: the loss
        ignores every other position, and with a 30k vocabulary (MiniLM) the head over all of them cost
        about a third of the text side's compute."""
        tokens, _ = self.text(input_ids, attention_mask)
        return self.mlm_head(tokens[selected])

