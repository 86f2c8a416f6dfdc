"""MSN with optional EHR fusion: masked anchor views vs an EMA target, matched through prototypes.

Assran et al., "Masked Siamese Networks for Label-Efficient Learning", ECCV 2022
(https://arxiv.org/abs/2204.07141); EHR fusion from Shurrab, Guerra-Manzanares,
Shamout, "Multimodal masked siamese network improves chest X-ray representation
learning", Sci Rep 2024 (arXiv 2407.04449; code github.com/nyuad-cai/CXR-EHR-MSN,
``src/models/cxrehrmsn.py``). Per image::

    target view  --target ViT (EMA, no grad)--> CLS --target head--------------------> target z   (B, D)
    anchor views --mask 15 % patches--> anchor ViT --> CLS --[fuse EHR]--> anchor head --> anchor z (V*B, D)
    loss(anchor z, target z, prototypes)      (losses.MSNLoss: Sinkhorn on targets, ME-MAX on anchors)

Without EHR the anchor head runs once per view size (its BatchNorm sees the random anchors, then
the focal anchors, as in both references); with EHR once over all anchor views, as the authors'
EHR model does.

EHR fusion (anchor branch ONLY; the target and evaluation never see EHR)::

    e = Linear(ehr_in -> 128)(EHR)                   no activation, repeated for every anchor view
    z = Linear(D + 128 -> D)(concat(anchor CLS, e))  then the anchor projection head

The backbone is timm's ViT (``baselines.common.backbones.VitBackbone``) with the
patch size and head count of the config and a 1-channel patch embedding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import timm
import torch
from torch import nn

from baselines.common.backbones import VitBackbone
from baselines.common.ema import ema_update

_TIMM_NAMES = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}


def build_vit(name: str, *, patch_size: int, num_heads: int, image_size: int, in_chans: int = 1) -> VitBackbone:
    """A randomly initialised timm ViT (seed the global torch RNG first for a reproducible init).

    ``dynamic_img_size`` lets the same weights take the 96 px focal views and the 224 px random views.
    """
    vit = timm.create_model(_TIMM_NAMES[name], pretrained=False, num_classes=0, in_chans=in_chans,
                            img_size=image_size, patch_size=patch_size, num_heads=num_heads, dynamic_img_size=True)
    return VitBackbone(name, vit, in_chans)


MASKING_RULES = ("cxr-ehr-msn", "msn", "per-image")


def random_token_keep(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None
                      ) -> torch.Tensor:
    """``(B, num_keep)`` indices of the patch tokens an anchor keeps; ``num_keep = floor(N * (1 - ratio))``.

    The ``per-image`` rule: each image its own uniform draw over all N patches. The rest are
    DROPPED, not replaced by a mask token (as lightly's ``random_token_mask``): 196 patches at
    224 px keep 166 (30 masked), 36 at 96 px keep 30. At least one patch is kept.
    """
    num_keep = max(1, int(num_patches * (1.0 - mask_ratio)))
    noise = torch.rand(batch, num_patches, generator=generator)  # CPU: a pure function of the step's generator
    return noise.argsort(dim=1)[:, :num_keep]  # (B, num_keep)


def kept_tokens(batch: int, num_patches: int, mask_ratio: float, masking: str,
                generator: torch.Generator | None) -> torch.Tensor:
    """``(B, 1 + n)`` indices into the token sequence ``[CLS, patch 0, ..., patch N-1]`` an anchor keeps.

    Three rules (``MSNConfig.masking``), each named after the code it follows:

    - ``per-image``: the CLS and ``floor(N * (1 - r))`` patches, drawn per image uniformly over all N
      (``random_token_keep``; a harness choice: lightly's rule without its off-by-one below);
    - ``cxr-ehr-msn``: the released code's call of lightly 1.4.21 ``random_token_mask`` with
      ``size=(B, N)``: noise over N positions of which position 0 (the CLS) is forced first, and
      ``int(N * (1 - r))`` tokens kept COUNTING the CLS, so one patch fewer is kept and the last
      patch (index N in the sequence) is never kept;
    - ``msn``: facebookresearch/msn ``src/deit.py``: one permutation of the N patches for the whole
      batch, the CLS and its first ``floor(N * (1 - r))`` patches.

    Args:
        batch: B.
        num_patches: N.
        mask_ratio: r, the fraction dropped.
        masking: the rule.
        generator: CPU generator (the step's own RNG).

    Returns:
        Long indices, the CLS (0) first.

    Raises:
        ValueError: an unknown rule.
    """
    if masking == "per-image":
        keep = random_token_keep(batch, num_patches, mask_ratio, generator)  # (B, n) patch indices
        return torch.cat([torch.zeros(batch, 1, dtype=keep.dtype), 1 + keep], dim=1)
    if masking == "cxr-ehr-msn":
        num_keep = max(1, int(num_patches * (1 - mask_ratio)))  # counts the CLS
        noise = torch.rand(batch, num_patches, generator=generator)
        noise[:, 0] = -1  # the CLS is never masked; the sequence's last patch is outside the draw
        return noise.argsort(dim=1)[:, :num_keep]  # (B, num_keep), 0 first
    if masking == "msn":
        num_keep = int(num_patches * (1.0 - mask_ratio))
        perm = 1 + torch.randperm(num_patches, generator=generator)[:num_keep]  # one draw for the batch
        return torch.cat([torch.zeros(1, dtype=perm.dtype), perm]).expand(batch, -1)
    raise ValueError(f"msn: masking must be one of {MASKING_RULES}, got {masking!r}")


def masked_cls(backbone: VitBackbone, images: torch.Tensor, mask_ratio: float,
               generator: torch.Generator | None = None, masking: str = "per-image") -> torch.Tensor:
    """The ViT's CLS embedding with a ``mask_ratio`` of patch tokens dropped: ``(B, C, H, W) -> (B, D)``.

    Which tokens stay is ``kept_tokens(..., masking)``; position embeddings are added before dropping.
    """
    vit = backbone.vit
    x = vit._pos_embed(vit.patch_embed(images))  # (B, prefix + N, D)
    if mask_ratio > 0:
        if vit.num_prefix_tokens != 1:
            raise ValueError(f"msn: masking needs a ViT with one CLS token, not {vit.num_prefix_tokens} prefix tokens")
        batch, num_patches, width = x.shape[0], x.shape[1] - 1, x.shape[2]
        keep = kept_tokens(batch, num_patches, mask_ratio, masking, generator).to(x.device)  # (B, 1 + n)
        x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, width))  # (B, 1 + n, D)
    x = vit.norm(vit.blocks(vit.norm_pre(x)))  # (B, 1 + n, D)
    return vit.forward_head(x, pre_logits=True)  # (B, D): the CLS token


class MSNProjectionHead(nn.Sequential):
    """Linear-BN-GELU-Linear-BN-GELU-Linear (lightly ``MSNProjectionHead(D, 4D, D)`` in the authors' code).

    As lightly 1.4.21's ``ProjectionHead``, a Linear followed by a BatchNorm has no bias (the
    BatchNorm would subtract it again); MSN's ``init_model`` keeps one there.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )


class EHRFusion(nn.Module):
    """``z = W_f [CLS; W_e EHR]``: the EHR vector projected to ``embed_dim`` and fused into the CLS embedding."""

    def __init__(self, dim: int, ehr_in: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.ehr_projection = nn.Linear(ehr_in, embed_dim)  # no activation, as in the authors' code
        self.fusion = nn.Linear(dim + embed_dim, dim)

    def forward(self, cls: torch.Tensor, ehr: torch.Tensor) -> torch.Tensor:
        """``cls (V*B, D)`` view-major, ``ehr (B, ehr_in)`` -> ``(V*B, D)``."""
        num_views = cls.shape[0] // ehr.shape[0]
        e = self.ehr_projection(ehr.to(cls.dtype)).repeat(num_views, 1)  # (V*B, embed_dim), same EHR every view
        return self.fusion(torch.cat([cls, e], dim=1))  # (V*B, D)


class MSN(nn.Module):
    """Masked Siamese Network with an anchor branch, an EMA target branch and learnable prototypes.

    Args:
        backbone: zero-argument factory for the ViT (called once; the target is a copy).
        num_prototypes: K (1,024 in the paper).
        mask_ratio: fraction of patch tokens dropped from the anchor views (0.15).
        momentum: EMA momentum m of the target: theta_t <- m * theta_t + (1 - m) * theta_a (0.996); the
            default of ``momentum_update_target`` (a schedule passes its own value per step).
        ehr_in: width of the EHR vector; 0 builds vanilla MSN (no fusion layers).
        ehr_embed_dim: width the EHR is projected to before fusion (128).
        train_prototypes: False reproduces the released code, whose prototypes never receive a gradient.
        masking: which tokens an anchor keeps (``kept_tokens``); under ``msn`` only the first (random,
            full-size) anchor view is masked and the focal views are not, as MSN's ``deit.py`` resets
            ``patch_drop`` after the first size group; the other rules mask every anchor view.
    """

    def __init__(self, backbone: Callable[[], VitBackbone], num_prototypes: int = 1024, mask_ratio: float = 0.15,
                 momentum: float = 0.996, ehr_in: int = 0, ehr_embed_dim: int = 128,
                 train_prototypes: bool = True, masking: str = "per-image") -> None:
        super().__init__()
        if masking not in MASKING_RULES:
            raise ValueError(f"msn: masking must be one of {MASKING_RULES}, got {masking!r}")
        self.mask_ratio, self.momentum, self.masking = mask_ratio, momentum, masking
        self.anchor_backbone = backbone()
        dim = self.anchor_backbone.num_features
        self.anchor_projection_head = MSNProjectionHead(dim, 4 * dim, dim)
        self.ehr_fusion = EHRFusion(dim, ehr_in, ehr_embed_dim) if ehr_in > 0 else None

        # the target branch starts as an exact copy of the anchor's and is never updated by gradient
        self.target_backbone = copy.deepcopy(self.anchor_backbone)
        self.target_projection_head = copy.deepcopy(self.anchor_projection_head)
        for param in self.target_parameters():
            param.requires_grad = False

        # K prototypes in the projection space (lightly: nn.Linear(D, K, bias=False).weight)
        self.prototypes = nn.Parameter(nn.Linear(dim, num_prototypes, bias=False).weight.detach().clone(),
                                       requires_grad=train_prototypes)  # (K, D)

    def target_parameters(self) -> list[nn.Parameter]:
        return [*self.target_backbone.parameters(), *self.target_projection_head.parameters()]

    def anchor_parameters(self) -> list[nn.Parameter]:
        return [*self.anchor_backbone.parameters(), *self.anchor_projection_head.parameters()]

    def momentum_update_target(self, momentum: float | None = None) -> None:
        """EMA of the anchor branch into the target branch (after every optimiser step, as in MSN).

        Args:
            momentum: this step's m (``baselines.common.ema.ema_momentum``); None: ``self.momentum``.
        """
        ema_update(self.target_parameters(), self.anchor_parameters(),
                   self.momentum if momentum is None else momentum)

    @torch.no_grad()
    def encode_target(self, target_view: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, D)``: the unmasked view through the target branch, image only."""
        return self.target_projection_head(self.target_backbone(target_view))

    def encode_anchors(self, anchor_views: list[torch.Tensor], ehr: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked anchor views (views of one size are batched together) -> ``(V*B, D)`` view-major.

        Vanilla MSN projects each size group on its own, so the head's BatchNorm statistics are per
        group (the random anchors, then the focal ones), as both references do: MSN's ``deit.py``
        applies ``fc`` inside its per-size loop, and the MSN+EHR authors' vanilla MSN
        (``baselinemodels.MSN.encode_masked``) projects inside ``encode_masked``. With EHR the CLS
        tokens of all anchor views are fused and projected together, as ``cxrehrmsn.py`` does.
        """
        if self.ehr_fusion is not None and ehr is None:
            raise ValueError("MSN+EHR: the anchor branch needs the images' EHR vectors")
        cls = []
        for group, size in enumerate(dict.fromkeys(v.shape[-1] for v in anchor_views)):  # random, then focal
            same = [v for v in anchor_views if v.shape[-1] == size]
            ratio = 0.0 if self.masking == "msn" and group > 0 else self.mask_ratio  # MSN: focal views unmasked
            cls.append(masked_cls(self.anchor_backbone, torch.cat(same), ratio, generator, self.masking))
        if self.ehr_fusion is None:
            return torch.cat([self.anchor_projection_head(c) for c in cls])  # (V*B, D), views by size group
        z = self.ehr_fusion(torch.cat(cls), ehr)  # (V*B, D); order: views by size group, each in its given order
        return self.anchor_projection_head(z)  # (V*B, D)

    def forward(self, views: list[torch.Tensor], ehr: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Input:
            views: [target view (B, C, S, S), random anchor view (B, C, S, S), focal views (B, C, s, s) ...]
            ehr: (B, ehr_in) for MSN+EHR, else None
            generator: CPU generator for the token masks (the step's own RNG)
        Output:
            anchors (V*B, D) view-major, targets (B, D), prototypes (K, D)
        """
        sizes = [v.shape[-1] for v in views[1:]]
        if sizes != sorted(sizes, reverse=True):
            raise ValueError(f"anchor views must come largest first (random, then focal), got sizes {sizes}")
        targets = self.encode_target(views[0])  # (B, D), no gradient
        anchors = self.encode_anchors(views[1:], ehr, generator)  # (V*B, D)
        return anchors, targets, self.prototypes
