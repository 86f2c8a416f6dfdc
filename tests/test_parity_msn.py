"""MSN parity: the harness's MSN / MSN+EHR against independent transcriptions of BOTH references.

Read:

- facebookresearch/msn at 4388dc1: ``src/losses.py`` (``init_msn_loss``: ``snn``, ``sharpen``, the
  loss's steps 1-4, ``distributed_sinkhorn``), ``src/msn_train.py`` (``train_step``: loss, backward,
  ``optimizer.step()``, then the target EMA with ``next(momentum_scheduler)``; the momentum
  schedule; ``init_opt``'s parameter groups), ``src/deit.py`` (``forward``: views batched by size,
  ``patch_drop`` on the first size group only; ``forward_features``: one ``randperm`` for the
  batch, the CLS kept), ``src/utils.py`` (``AllReduce``), ``configs/pretrain/msn_vits16.yaml``;
- nyuad-cai/CXR-EHR-MSN at b3755c0: ``src/models/cxrehrmsn.py`` (``training_step``,
  ``encode_masked``, ``configure_optimizers``), ``src/models/baselinemodels.py`` (``MSN``);
- lightly at v1.4.21 (3dc9bcf, the version in CXR-EHR-MSN's ``environment.yml``):
  ``lightly/loss/msn_loss.py``, ``lightly/models/utils.py`` (``random_token_mask``,
  ``update_momentum``), ``lightly/models/modules/masked_autoencoder.py`` (``MAEEncoder.forward``).

The math, in my words (written out again below, without the project's code; only the networks'
layers are shared, and the random numbers: each reference draws from the global RNG, the
transcriptions from a generator seeded as the harness's step generator, so both see the same draws):

- predictions: L2-normalise anchors, targets and prototypes; p = softmax(cos / 0.1) (MSN's ``snn``
  with one-hot prototype labels); targets: sharpen p^(1/T) renormalised, Sinkhorn (rows of the
  transposed matrix to 1/K with a sum over all ranks, columns to 1/B with B the global batch,
  finally times B), repeated once per anchor view;
- loss = mean over anchors of sum_k log(p_anchor ** -p_target) + 1 x (log K + sum p_bar log p_bar),
  p_bar the anchors' mean prediction (averaged over ranks by MSN's ``AllReduce``, whose backward
  passes the gradient through unchanged; lightly's default averages nothing);
- masking: CXR-EHR-MSN calls lightly's ``random_token_mask`` with ``size=(B, N)``, N the patch count:
  noise over N positions, position 0 forced first (the CLS), ``int(N * 0.85)`` indices kept into
  the token sequence [CLS, patches] after the position embeddings are added; every anchor view.
  MSN keeps the CLS and ``1 + randperm(N)[:floor(N * 0.85)]`` for the whole batch, the random anchor
  view only (the focal views unmasked);
- the EMA: CXR-EHR-MSN at the START of each step, m = 0.996 always; MSN after each step with
  m_i = 0.996 + i * (1 - 0.996) / (1.25 x steps). The same target enters every loss either way: the
  authors' update at the start of step t + 1 is the harness's after step t;
- optimiser: CXR-EHR-MSN AdamW(self.parameters(), lr, weight_decay) (parameters without a gradient,
  the frozen target and prototypes, are skipped by AdamW); MSN AdamW with three groups: decayed =
  names without 'bias' and 'bn' and not 1-D; not decayed = the rest; prototypes, not decayed. MSN's
  lr / weight-decay schedules and gradient clipping are documented differences (not transcribed:
  the same lr and decay on both sides here).
"""

from __future__ import annotations

import copy
import math
import os
import socket
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from baselines.common.backbones import VitBackbone
from baselines.common.ema import ema_momentum
from baselines.common.optim import weight_decay_groups
from baselines.msn_ehr import MSNEHRMethod, MSNMethod
from baselines.msn_ehr.config import MSNConfig
from baselines.msn_ehr.losses import MSNLoss, me_max, sinkhorn
from baselines.msn_ehr.model import MSN, kept_tokens, masked_cls
from baselines.msn_ehr.pretrain import build_optimizer, target_momentum
from baselines.msn_ehr.recipe import FIXED_DIFFERENCES, ORIGINAL_MSN, differences_from_msn

torch.set_num_threads(1)

B, K_PROTO, EHR_IN, PATCH = 4, 16, 3, 4
ATOL = 1e-6


def shallow_vit() -> VitBackbone:
    """ViT-Tiny width, 2 blocks, patch 4: 16 px views have 16 patches, 8 px focal views 4."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, in_chans=1, img_size=16,
                            patch_size=PATCH, depth=2, dynamic_img_size=True)
    return VitBackbone("vit_tiny", vit, 1)


def fixed_views(seed: int, focal: int = 2) -> list[torch.Tensor]:
    """[target 16 px, random anchor 16 px, ``focal`` focal anchors 8 px], (B, 1, S, S) each."""
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(B, 1, 16, 16, generator=g) for _ in range(2)]
            + [torch.randn(B, 1, 8, 8, generator=g) for _ in range(focal)])


def step_generator(step: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + step)


# ---------------------------------------------------------------- the references, transcribed


def msn_sinkhorn(Q: torch.Tensor, num_itr: int = 3, dist=None) -> torch.Tensor:
    """facebookresearch/msn ``distributed_sinkhorn`` (``dist``: torch.distributed when ranks > 1)."""
    world = dist.get_world_size() if dist is not None else 1
    Q = Q.T.clone()
    B_all, K = Q.shape[1] * world, Q.shape[0]
    sum_Q = Q.sum()
    if dist is not None:
        dist.all_reduce(sum_Q)
    Q = Q / sum_Q
    for _ in range(num_itr):
        rows = Q.sum(dim=1, keepdim=True)
        if dist is not None:
            dist.all_reduce(rows)
        Q = Q / rows / K
        Q = Q / Q.sum(dim=0, keepdim=True) / B_all
    return (Q * B_all).T


class _AllReduceMean(torch.autograd.Function):
    """MSN ``src/utils.py`` ``AllReduce``: forward the mean over ranks, backward the gradient unchanged."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            x = x.contiguous() / dist.get_world_size()
            dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grads):  # type: ignore[override]
        return grads


def msn_loss(anchor_views, target_views, prototypes, T=0.25, tau=0.1, use_sinkhorn=True, memax_weight=1.0,
             dist=None):
    """facebookresearch/msn ``init_msn_loss(...)(...)``: ``ploss + memax_weight * rloss`` (ent_weight 0)."""
    num_views = anchor_views.shape[0] // target_views.shape[0]
    proto_labels = torch.eye(prototypes.shape[0])  # one_hot(range(K)) with label_smoothing 0

    def snn(query, supports):
        query, supports = F.normalize(query), F.normalize(supports)
        return F.softmax(query @ supports.T / tau, dim=1) @ proto_labels

    probs = snn(anchor_views, prototypes)
    with torch.no_grad():
        targets = snn(target_views, prototypes) ** (1.0 / T)
        targets = targets / targets.sum(dim=1, keepdim=True)
        if use_sinkhorn:
            targets = msn_sinkhorn(targets, dist=dist)
        targets = torch.cat([targets for _ in range(num_views)], dim=0)
    ploss = torch.mean(torch.sum(torch.log(probs ** (-targets)), dim=1))
    avg_probs = _AllReduceMean.apply(torch.mean(probs, dim=0))
    rloss = -torch.sum(torch.log(avg_probs ** (-avg_probs))) + math.log(float(len(avg_probs)))
    return ploss + memax_weight * rloss, ploss, rloss


def lightly_msn_loss(anchors, targets, prototypes, target_sharpen_temperature=0.25, temperature=0.1,
                     sinkhorn_iterations=3, regularization_weight=1.0):
    """lightly 1.4.21 ``MSNLoss()(anchors, targets, prototypes)`` (gather_distributed False, the default)."""
    num_views = anchors.shape[0] // targets.shape[0]
    anchors, targets, prototypes = F.normalize(anchors, dim=1), F.normalize(targets, dim=1), F.normalize(
        prototypes, dim=1)
    anchor_probs = F.softmax(anchors @ prototypes.T / temperature, dim=1)
    with torch.no_grad():
        target_probs = F.softmax(targets @ prototypes.T / temperature, dim=1)
        target_probs = target_probs ** (1.0 / target_sharpen_temperature)
        target_probs = target_probs / target_probs.sum(dim=1, keepdim=True)
        if sinkhorn_iterations > 0:
            num_targets, num_prototypes = target_probs.shape
            P = target_probs.T
            P = P / P.sum()
            for _ in range(sinkhorn_iterations):
                P = P / P.sum(dim=1, keepdim=True) / num_prototypes
                P = P / P.sum(dim=0, keepdim=True) / num_targets
            target_probs = (P * num_targets).T
        target_probs = target_probs.repeat((num_views, 1))
    loss = torch.mean(torch.sum(torch.log(anchor_probs ** (-target_probs)), dim=1))
    if regularization_weight > 0:
        mean = anchor_probs.mean(dim=0)
        loss = loss + regularization_weight * (-torch.sum(torch.log(mean ** (-mean))) + math.log(float(len(mean))))
    return loss


def lightly_random_token_mask(size, mask_ratio, generator):
    """lightly 1.4.21 ``random_token_mask(size, mask_ratio, mask_class_token=False)``: idx_keep."""
    batch_size, sequence_length = size
    num_keep = int(sequence_length * (1 - mask_ratio))
    noise = torch.rand(batch_size, sequence_length, generator=generator)
    noise[:, 0] = -1
    num_keep = max(1, num_keep)
    return torch.argsort(noise, dim=1)[:, :num_keep]


def tokens(backbone: VitBackbone, images: torch.Tensor) -> torch.Tensor:
    """[CLS, patch tokens] with the position embeddings added (the network's own layers)."""
    return backbone.vit._pos_embed(backbone.vit.patch_embed(images))


def encoder_cls(backbone: VitBackbone, x: torch.Tensor) -> torch.Tensor:
    vit = backbone.vit
    return vit.norm(vit.blocks(vit.norm_pre(x)))[:, 0]


def cxr_ehr_msn_encode_masked(backbone: VitBackbone, anchors: torch.Tensor, mask_ratio: float, generator
                              ) -> torch.Tensor:
    """``CxrEhrMSN.encode_masked``: the mask over (B, (width // patch) ** 2), then MAEBackbone(anchors, idx_keep)."""
    batch_size, _, _, width = anchors.shape
    seq_length = (width // PATCH) ** 2
    idx_keep = lightly_random_token_mask((batch_size, seq_length), mask_ratio, generator)
    x = tokens(backbone, anchors)  # MAEEncoder.forward: position embeddings first ...
    x = torch.gather(x, 1, idx_keep[..., None].expand(-1, -1, x.shape[-1]))  # ... then utils.get_at_index
    return encoder_cls(backbone, x)


def msn_encoder(backbone: VitBackbone, head: torch.nn.Module, views: list[torch.Tensor], patch_drop: float,
                generator) -> torch.Tensor:
    """deit ``VisionTransformer.forward(views, patch_drop)`` with the projection head as its ``fc``."""
    out, start = [], 0
    sizes = [v.shape[-1] for v in views]
    ends = torch.cumsum(torch.unique_consecutive(torch.tensor(sizes), return_counts=True)[1], 0)
    for end in ends.tolist():
        x = tokens(backbone, torch.cat(views[start:end]))
        if patch_drop > 0:
            T_H = int(math.floor((x.shape[1] - 1) * (1.0 - patch_drop)))
            perm = 1 + torch.randperm(x.shape[1] - 1, generator=generator)[:T_H]
            x = x[:, torch.cat([torch.zeros(1, dtype=perm.dtype), perm]), :]
        out.append(head(encoder_cls(backbone, x)))  # forward_features ends with self.fc
        patch_drop, start = 0.0, end
    return torch.cat(out)


def lightly_update_momentum(model: torch.nn.Module, model_ema: torch.nn.Module, m: float) -> None:
    for ema, online in zip(model_ema.parameters(), model.parameters(), strict=True):
        ema.data = ema.data * m + online.data * (1.0 - m)


def msn_init_opt_groups(named: list[tuple[str, torch.nn.Parameter]], prototypes, wd: float) -> list[dict]:
    """``init_opt``'s groups over the encoder (backbone + head) and the prototypes."""
    return [{"params": [p for n, p in named if ("bias" not in n) and ("bn" not in n) and len(p.shape) != 1]},
            {"params": [p for n, p in named if ("bias" in n) or ("bn" in n) or (len(p.shape) == 1)],
             "weight_decay": 0},
            {"params": [prototypes], "weight_decay": 0}]


# Adam's first steps are about lr x sign(g) wherever |g| >> eps, so two correct computations whose gradients
# differ in the last bit (log(p ** -t) against t * log p) would differ by a whole lr in the entries whose
# gradient is near 0 (parameters before a BatchNorm are exactly such). Both sides run AdamW with this eps:
# the update is then a smooth function of the gradient, and agreement to 1e-6 tests the gradients, the
# decay groups and the EMA, not the rounding (measured: with the default eps 1e-8, entries differ by lr;
# with 1e-3 by ~5e-6; with 1e-1 by < 2e-7 after two steps).
EPS = 1e-1
# BatchNorm running statistics are float32 means and variances over the batch of a 768-wide layer's outputs,
# so the parameters' own sub-1e-6 differences and a reduction order that depends on the CPU's vector width
# add up in them: after three updates they differed by at most 2.5e-6 (on values of order 0.2-0.8) on one
# 2-core machine, below 1e-6 on the CI machine. A wrong update moves the parameters, and so them, far more.
BUFFER_ATOL = 1e-5
LR, WD = 1e-2, 0.5  # large enough for a wrong decay group to move a parameter by far more than 1e-6


def smooth(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for group in optimizer.param_groups:
        group["eps"] = EPS
    return optimizer


def assert_same_parameters(got: torch.nn.Module, want: torch.nn.Module, what: str) -> None:
    """Every parameter to ``ATOL``, and every buffer (BatchNorm statistics) to ``BUFFER_ATOL``."""
    for (name, a), b in zip(got.named_parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=f"{what}: {name}")
    for (name, a), b in zip(got.named_buffers(), want.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=BUFFER_ATOL, msg=f"{what}: {name}")


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize(("sharpen", "iterations"), [(0.25, 3), (0.1, 3), (0.25, 0)])
def test_loss_and_gradients_match_both_references(sharpen, iterations):
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(3 * B, 12, generator=g, requires_grad=True)  # 3 anchor views of B images
    targets, protos = torch.randn(B, 12, generator=g), torch.randn(K_PROTO, 12, generator=g, requires_grad=True)
    loss, parts = MSNLoss(0.1, sharpen, iterations, 1.0)(anchors, targets, protos)
    grads = torch.autograd.grad(loss, (anchors, protos))

    want, ploss, rloss = msn_loss(anchors, targets, protos, T=sharpen, use_sinkhorn=iterations > 0)
    want_grads = torch.autograd.grad(want, (anchors, protos))
    torch.testing.assert_close(loss, want, rtol=0, atol=ATOL)
    torch.testing.assert_close(parts["cross_entropy"], ploss.detach(), rtol=0, atol=ATOL)
    torch.testing.assert_close(parts["me_max"], rloss.detach(), rtol=0, atol=ATOL)
    for got, exp in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=ATOL)
    lightly = lightly_msn_loss(anchors, targets, protos, sharpen, sinkhorn_iterations=iterations)
    torch.testing.assert_close(loss, lightly, rtol=0, atol=ATOL)
    for got, exp in zip(grads, torch.autograd.grad(lightly, (anchors, protos)), strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=ATOL)
    assert loss.item() > 0.1  # not a degenerate case


def test_sinkhorn_matches_distributed_sinkhorn_on_one_process():
    probs = torch.softmax(3 * torch.randn(8, K_PROTO, generator=torch.Generator().manual_seed(1)), dim=1)
    for iterations in (1, 3, 10):
        torch.testing.assert_close(sinkhorn(probs, iterations), msn_sinkhorn(probs, iterations), rtol=0, atol=ATOL)


# ---------------------------------------------------------------- views


def test_paper_views_are_the_trainers_msn_transform():
    """cxr_ehr_msn_trainer.py: MSNTransform(random_size=224, focal_size=96, random_views=2, focal_views=10,
    random_crop_scale=(0.3, 1), cj_prob=0, gaussian_blur=0, random_gray_scale=0, hf_prob=0.5), lightly's
    focal crop scale default (0.05, 0.3); views[0] the target, views[1] and views[2:] the anchors."""
    from baselines.msn_ehr.pretrain import view_configs

    views = view_configs(MSNMethod().config(MSNMethod.profiles["paper"]))
    assert [v.size for v in views] == [224, 224] + [96] * 10
    assert [v.scale for v in views] == [(0.3, 1.0)] * 2 + [(0.05, 0.3)] * 10
    assert all(v.hflip and v.rotation == 0 and v.brightness == 0 and v.contrast == 0 for v in views)


# ---------------------------------------------------------------- masking


def test_cxr_ehr_msn_masking_is_lightlys_rule_as_the_code_calls_it():
    for n, batch in ((16, B), (4, 2 * B), (196, 2), (36, 3)):  # 224 / 16 and 96 / 16 too
        got = kept_tokens(batch, n, 0.15, "cxr-ehr-msn", torch.Generator().manual_seed(n))
        want = lightly_random_token_mask((batch, n), 0.15, torch.Generator().manual_seed(n))
        assert torch.equal(got, want)
        assert got.shape == (batch, max(1, int(n * 0.85))) and (got[:, 0] == 0).all()
        assert (got < n).all()  # the sequence's last token (patch N - 1) is never kept
    assert kept_tokens(2, 196, 0.15, "cxr-ehr-msn", None).shape == (2, 166)  # CLS + 165 patches at 224 px

    vit, views = shallow_vit(), fixed_views(0)
    got = masked_cls(vit, views[1], 0.15, torch.Generator().manual_seed(5), "cxr-ehr-msn")
    want = cxr_ehr_msn_encode_masked(vit, views[1], 0.15, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_msn_masking_is_one_permutation_per_batch_on_the_random_anchor_only():
    torch.manual_seed(0)
    model = MSN(shallow_vit, num_prototypes=K_PROTO, masking="msn")
    views = fixed_views(1)
    got = model.encode_anchors(views[1:], generator=torch.Generator().manual_seed(3))
    want = msn_encoder(model.anchor_backbone, model.anchor_projection_head, views[1:], 0.15,
                       torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    keep = kept_tokens(3, 16, 0.15, "msn", torch.Generator().manual_seed(0))
    assert keep.shape == (3, 1 + 13) and (keep == keep[0]).all() and (keep[:, 0] == 0).all()


def test_per_image_masking_keeps_the_cls_and_floor_n_patches_over_all_of_them():
    keep = kept_tokens(200, 16, 0.15, "per-image", torch.Generator().manual_seed(0))
    assert keep.shape == (200, 1 + 13) and (keep[:, 0] == 0).all()
    assert set(keep[:, 1:].flatten().tolist()) == set(range(1, 17))  # the last patch (16) too
    assert not (keep == keep[0]).all()  # a draw per image


# ---------------------------------------------------------------- one update, each reference


def cxr_ehr_msn_steps(model: MSN, cfg: MSNConfig, steps: int, ehr: torch.Tensor) -> tuple[MSN, list[torch.Tensor]]:
    """``CxrEhrMSN.training_step`` + Lightning's optimiser step, ``steps`` times, on a copy of ``model``."""
    ref = copy.deepcopy(model)
    optimizer = smooth(torch.optim.AdamW(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))
    losses = []
    for step in range(steps + 1):
        lightly_update_momentum(ref.anchor_backbone, ref.target_backbone, 0.996)
        lightly_update_momentum(ref.anchor_projection_head, ref.target_projection_head, 0.996)
        if step == steps:  # the start of the next step: the update the harness makes after the last one
            break
        views, generator = fixed_views(10 + step), step_generator(step)
        targets, anchors, anchors_focal = views[0], views[1], torch.concat(views[2:], dim=0)
        ehr_embed = ref.ehr_fusion.ehr_projection(ehr).repeat((len(views) - 1, 1))
        targets_out = ref.target_projection_head(ref.target_backbone(targets))
        anchors_out = cxr_ehr_msn_encode_masked(ref.anchor_backbone, anchors, 0.15, generator)
        focal_out = cxr_ehr_msn_encode_masked(ref.anchor_backbone, anchors_focal, 0.15, generator)
        anchors_out = torch.cat([anchors_out, focal_out], dim=0)
        anchors_out = ref.ehr_fusion.fusion(torch.cat((anchors_out, ehr_embed), 1))
        anchors_out = ref.anchor_projection_head(anchors_out)
        loss = lightly_msn_loss(anchors_out, targets_out, ref.prototypes.data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return ref, losses


def harness_steps(model: MSN, cfg: MSNConfig, steps: int, ehr: torch.Tensor | None) -> list[torch.Tensor]:
    """The project's code, as ``pretrain``'s step and ``after_step`` run it."""
    optimizer = smooth(build_optimizer(model, cfg))
    loss_fn = MSNLoss(cfg.temperature, cfg.sharpen_temperature, cfg.sinkhorn_iterations, cfg.me_max_weight)
    losses = []
    for step in range(steps):
        loss, _ = loss_fn(*model(fixed_views(10 + step), ehr, generator=step_generator(step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.momentum_update_target(target_momentum(cfg, step, steps))
        losses.append(loss.detach())
    return losses


def test_paper_recipe_matches_the_cxr_ehr_msn_code_for_two_updates():
    """Frozen prototypes, EMA 0.996 held, AdamW decay on every parameter, lightly's mask: the paper profile."""
    cfg = MSNMethod().config({**MSNMethod.profiles["paper"], "lr": LR, "weight_decay": WD})
    assert {k: MSNEHRMethod.profiles["paper"][k] for k in ORIGINAL_MSN} == {k: getattr(cfg, k) for k in ORIGINAL_MSN}
    assert (cfg.train_prototypes, cfg.momentum_schedule, cfg.weight_decay_on, cfg.masking) == (
        False, "constant", "all", "cxr-ehr-msn")
    torch.manual_seed(0)
    model = MSN(shallow_vit, num_prototypes=K_PROTO, mask_ratio=cfg.mask_ratio, momentum=cfg.momentum, ehr_in=EHR_IN,
                train_prototypes=cfg.train_prototypes, masking=cfg.masking)
    ehr = torch.randn(B, EHR_IN, generator=torch.Generator().manual_seed(2))
    prototypes = model.prototypes.detach().clone()
    ref, want = cxr_ehr_msn_steps(model, cfg, 2, ehr)
    got = harness_steps(model, cfg, 2, ehr)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=ATOL, msg=f"loss at step {step}")
    assert_same_parameters(model, ref, "after two updates")  # anchor, EHR layers, target, prototypes
    assert torch.equal(model.prototypes, prototypes)  # never trained, as `.data` in the released code
    assert not torch.allclose(model.target_backbone.vit.cls_token, ref.anchor_backbone.vit.cls_token)


def msn_steps(model: MSN, cfg: MSNConfig, steps: int) -> tuple[MSN, list[torch.Tensor]]:
    """``msn_train.py``'s ``train_step`` ``steps`` times on a copy of ``model`` (encoder = backbone + head)."""
    ref = copy.deepcopy(model)
    named = [(f"backbone.{n}", p) for n, p in ref.anchor_backbone.named_parameters()] + [
        (f"fc.{n}", p) for n, p in ref.anchor_projection_head.named_parameters()]
    optimizer = smooth(torch.optim.AdamW(msn_init_opt_groups(named, ref.prototypes, cfg.weight_decay), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay))
    start_m, final_m = 0.996, 1.0
    increment = (final_m - start_m) / (steps * 1.25)  # ipe * num_epochs = steps
    momentum_scheduler = (start_m + (increment * i) for i in range(int(steps * 1.25) + 1))
    losses = []
    for step in range(steps):
        imgs = fixed_views(10 + step)
        z = msn_encoder(ref.anchor_backbone, ref.anchor_projection_head, imgs[1:], 0.15, step_generator(step))
        with torch.no_grad():
            h = ref.target_projection_head(ref.target_backbone(imgs[0]))
        loss, _, _ = msn_loss(z.float(), h.float().detach(), ref.prototypes, T=0.25, use_sinkhorn=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            m = next(momentum_scheduler)
            encoder = [*ref.anchor_backbone.parameters(), *ref.anchor_projection_head.parameters()]
            target = [*ref.target_backbone.parameters(), *ref.target_projection_head.parameters()]
            for param_q, param_k in zip(encoder, target, strict=True):
                param_k.data.mul_(m).add_((1.0 - m) * param_q.detach().data)
        losses.append(loss.detach())
    return ref, losses


def test_original_msn_settings_match_facebookresearch_msn_for_three_updates():
    """ORIGINAL_MSN: trained prototypes, linear EMA, init_opt's decay groups, deit's mask: three updates."""
    cfg = MSNMethod().config({**MSNMethod.profiles["smoke"], **ORIGINAL_MSN, "lr": LR, "weight_decay": WD,
                              "sharpen_temperature": 0.25})
    torch.manual_seed(0)
    model = MSN(shallow_vit, num_prototypes=K_PROTO, mask_ratio=cfg.mask_ratio, momentum=cfg.momentum,
                train_prototypes=cfg.train_prototypes, masking=cfg.masking)
    prototypes = model.prototypes.detach().clone()
    ref, want = msn_steps(model, cfg, 3)
    got = harness_steps(model, cfg, 3, None)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=ATOL, msg=f"loss at step {step}")
    assert_same_parameters(model, ref, "after three updates")
    assert not torch.allclose(model.prototypes, prototypes)  # trained


def test_momentum_schedules_follow_their_references():
    steps = 40  # MSN: a generator of 0.996 + i * 0.004 / (1.25 * ipe * epochs), one next() per step
    scheduler = (0.996 + (1.0 - 0.996) / (steps * 1.25) * i for i in range(int(steps * 1.25) + 1))
    want = [next(scheduler) for _ in range(steps)]
    got = [ema_momentum(i, steps, 0.996, "linear", 1.0) for i in range(steps)]
    assert got == pytest.approx(want, abs=1e-12) and got[0] == 0.996 and got[-1] < 1.0
    assert {ema_momentum(i, steps, 0.996, "constant") for i in range(steps)} == {0.996}  # update_momentum(.., 0.996)
    cfg = MSNConfig(momentum_schedule="linear")
    assert target_momentum(cfg, 10, steps) == pytest.approx(want[10], abs=1e-12)


def test_weight_decay_groups_follow_init_opt_and_configure_optimizers():
    torch.manual_seed(0)
    model = MSN(shallow_vit, num_prototypes=K_PROTO, ehr_in=EHR_IN, train_prototypes=True)
    trained = [p for p in model.parameters() if p.requires_grad]
    (everything,) = weight_decay_groups(model.named_parameters(), 0.05, "all")
    assert [id(p) for p in everything["params"]] == [id(p) for p in trained] and everything["weight_decay"] == 0.05
    decayed, exempt = weight_decay_groups(model.named_parameters(), 0.05, "weights", exclude=[model.prototypes])
    want = msn_init_opt_groups([(n, p) for n, p in model.named_parameters() if p.requires_grad and
                                n != "prototypes"], model.prototypes, 0.05)
    assert {id(p) for p in decayed["params"]} == {id(p) for p in want[0]["params"]}
    assert {id(p) for p in exempt["params"]} == {id(p) for p in want[1]["params"] + want[2]["params"]}
    assert exempt["weight_decay"] == 0.0 and decayed["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    assert {"anchor_backbone.vit.pos_embed", "anchor_backbone.vit.cls_token"} <= {names[id(p)] for p in
                                                                                 decayed["params"]}
    assert "prototypes" in {names[id(p)] for p in exempt["params"]}
    with pytest.raises(ValueError, match="weight decay scope"):
        weight_decay_groups(model.named_parameters(), 0.05, "biases")


# ---------------------------------------------------------------- the card and the settings


def test_the_card_lists_every_difference_from_the_original_msn():
    paper = MSNEHRMethod()
    notes = paper.card_for(paper.config(paper.profiles["paper"])).notes
    for setting in ("train_prototypes=false", "momentum_schedule=constant", "weight_decay_on=all",
                    "masking=cxr-ehr-msn", *FIXED_DIFFERENCES):
        assert setting in notes
    original = MSNMethod().config({**MSNMethod.profiles["paper"], **ORIGINAL_MSN})
    assert differences_from_msn(original) == FIXED_DIFFERENCES  # nothing named left to differ
    assert differences_from_msn(MSNConfig(**{**ORIGINAL_MSN, "momentum": 0.99}))[0].startswith(
        "EMA momentum ramped linearly 0.99 -> 1.0")


@pytest.mark.parametrize(("key", "value"), [("masking", "random"), ("momentum_schedule", "cosine"),
                                            ("weight_decay_on", "bias")])
def test_an_unknown_recipe_value_is_an_error_naming_the_choices(key, value):
    method = MSNMethod()
    with pytest.raises(ValueError, match=f"msn: {key} must be one of"):
        method.config({**method.profiles["smoke"], key: value})


# ---------------------------------------------------------------- two processes (gloo)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randn(3 * 2 * B, 12, generator=g), torch.randn(2 * B, 12, generator=g), torch.randn(
        K_PROTO, 12, generator=g)


def _sharpened_targets(targets: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(F.normalize(targets, dim=1) @ F.normalize(prototypes, dim=1).T / 0.1, dim=1) ** 4
    return probs / probs.sum(dim=1, keepdim=True)


def _rows(tensor: torch.Tensor, rank: int, views: int) -> torch.Tensor:
    """This rank's images of a view-major global batch (each view's block split between the ranks)."""
    per_view = tensor.shape[0] // views
    blocks = tensor.view(views, per_view, -1)
    return blocks[:, rank * per_view // WORLD:(rank + 1) * per_view // WORLD].reshape(-1, tensor.shape[1])


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from baselines.common import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_from_env(backend="gloo")
    anchors, targets, protos = _global_batch()
    results = {}
    for name in ("harness", "msn"):
        a = _rows(anchors, rank, 3).clone().requires_grad_(True)
        p = protos.clone().requires_grad_(True)
        t = _rows(targets, rank, 1)
        if name == "harness":
            loss, _ = MSNLoss(0.1, 0.25, 3, 1.0)(a, t, p)
            assignment = sinkhorn(_sharpened_targets(t, p.detach()), 3)
            regulariser = me_max(torch.softmax(F.normalize(a, dim=1) @ F.normalize(p, dim=1).T / 0.1, dim=1))
        else:
            loss, _, regulariser = msn_loss(a, t, p, dist=dist)
            assignment = msn_sinkhorn(_sharpened_targets(t, p.detach()), 3, dist=dist)
        loss.backward()
        results[name] = {"loss": loss.detach(), "me_max": regulariser.detach(), "sinkhorn": assignment,
                         "grad_anchors": a.grad, "grad_prototypes": p.grad}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def test_sinkhorn_and_me_max_across_two_gloo_ranks_match_msn(tmp_path):
    """Global-batch Sinkhorn marginals and ME-MAX mean on 2 ranks of 4: the harness = MSN's all-reduced code,
    loss and gradients, on every rank."""
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="fork")
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for key, value in got["msn"].items():
            torch.testing.assert_close(got["harness"][key], value, rtol=1e-5, atol=ATOL, msg=f"rank {rank} {key}")
    _, targets, protos = _global_batch()
    one = sinkhorn(_sharpened_targets(targets, protos), 3)  # one process, the global batch
    both = torch.cat([torch.load(tmp_path / f"rank{r}.pt")["harness"]["sinkhorn"] for r in range(WORLD)])
    torch.testing.assert_close(both, one, rtol=0, atol=ATOL)  # the global batch's assignment, split by rank
