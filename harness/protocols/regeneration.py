"""Masked-patch regeneration at several mask scales (Wang et al. 2021's "image regeneration").

Every test image is cut into a grid of ``p x p`` pixel patches (``p`` in
``patch_sizes``, pixels of the encoder's preprocess size; the last row and column
of patches are cropped when ``p`` does not divide the size) and a fraction
``mask_ratio`` of the patches is hidden. The hidden patches are chosen by
``numpy.random.default_rng((seed, p, row))``: the same image gets the same mask
for a seed whatever the batch it falls in. Hidden pixels are set to 0 in the
encoder's normalised input space (the normalisation mean, a flat grey) BEFORE
the encoder sees the image, so nothing of them can leak.

Two ways to regenerate, so that every image encoder is comparable:

- ``native``: encoders with the ``regeneration`` capability call
  ``regenerate(masked_images, mask)`` (``harness.encoders.capabilities``).
- ``probe``: any other image encoder gets a *regeneration probe*
  (``RegenerationProbe``), a small convolutional decoder trained on the TRAIN
  split (the run's fraction of its patients) with the encoder frozen. Its input
  is the encoder's features of the masked image: the region features on
  ``region_grid`` when the encoder has them, else the global vector broadcast
  over a ``global_grid x global_grid`` grid; two coordinate channels (CoordConv)
  let the decoder place content in space. It predicts the whole image in [0, 1], as a correction of the training
  images' mean image (where it starts); the loss is the MSE on the hidden pixels.
  Fresh random masks (the same scales and ratio) are drawn at every step.

``mode: auto`` (default) takes ``native`` when the encoder can regenerate.

Metrics, in [0, 1] pixel space (``preprocess.from_model_input``), on the hidden
pixels only, per image and then averaged over the test images: ``mse_p{p}``,
``psnr_p{p}`` (dB, ``10 log10(1 / MSE)`` over the hidden pixels, capped at
``PSNR_CAP_DB`` so that a perfect image does not make the mean infinite) and
``ssim_p{p}`` (the SSIM map of the regenerated-in-place image against the
original, averaged over hidden pixels: windows that straddle the mask border
see the true visible pixels, as an inpainting does); ``mse`` / ``psnr`` /
``ssim`` average the scales. ``details["mean_image_baseline"]`` scores
predicting the training images' mean image (the floor a probe must beat).

Arguments: ``ARGS`` below (names, types, defaults and ranges, checked by
``harness.protocols.args`` when the task loads and again when the protocol runs).

Example task fragment::

    protocol: regeneration
    requires: [image]
    protocol_args: {patch_sizes: [8, 16, 32], mask_ratio: 0.5}

Predictions: ``n_examples`` original / masked / regenerated triplets as uint8
arrays (``original``, ``masked_p{p}``, ``regenerated_p{p}``; the regeneration
pasted into the original) for the leaderboard picture.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import metrics
from harness.encoders import capabilities
from harness.encoders.preprocess import from_model_input, to_model_input
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError

PSNR_CAP_DB = 100.0  # MSE 1e-10: numerically a perfect regeneration


def _metrics(a: dict[str, Any]) -> list[str]:
    """``mse`` / ``psnr`` / ``ssim`` (averaged over the scales) and each per scale, ``psnr_p{p}`` ..."""
    return [f"{m}{scale}" for m in ("mse", "psnr", "ssim") for scale in ("", *(f"_p{p}" for p in a["patch_sizes"]))]


ARGS = ProtocolArgs(
    "regeneration",
    {
        "patch_sizes": Arg(int, [8, 16, 32], "mask scales: patch sides in pixels of the preprocess size", many=True,
                           ge=1),
        "mask_ratio": Arg(float, 0.5, "fraction of the patches hidden", gt=0, lt=1),
        "mode": Arg(str, "auto", "auto (native when the encoder can regenerate) | native | probe",
                    choices=("auto", "native", "probe")),
        "batch_size": Arg(int, 32, "test and probe-training batch size", ge=1),
        "max_test": Arg(int, None, "score the first N test images (null: every one)", optional=True, ge=1),
        "n_examples": Arg(int, 8, "original / masked / regenerated triplets kept as predictions", ge=0),
        "n_bootstrap": Arg(int, 1000, "patient resamples for the PSNR / SSIM CIs", ge=1),
        # the regeneration probe
        "probe_steps": Arg(int, 500, "probe training steps (0: the probe predicts the mean image)", ge=0),
        "probe_lr": Arg(float, 1.0e-3, "probe AdamW learning rate", gt=0),
        "probe_width": Arg(int, 64, "probe channels (GroupNorm with 8 groups: a multiple of 8)", ge=8,
                           check=lambda v: None if v % 8 == 0 else f"must be a multiple of 8 (GroupNorm(8)), got {v}"),
        "global_grid": Arg(int, 7, "the grid a global feature vector is broadcast over", ge=1),
        "ssim_win_size": Arg(int, 7, "SSIM window side (odd)", ge=3,
                             check=lambda v: None if v % 2 else f"must be odd, got {v}"),
    },
    metrics=_metrics,
    requires=lambda a: ("image", "regeneration") if a["mode"] == "native" else ("image",))


# --------------------------------------------------------------------------- masks


def patch_mask(size: int, patch: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` bool: ``round(ratio * cells)`` (at least one) random ``patch``-pixel cells hidden."""
    if not 0 < ratio < 1:
        raise ProtocolError(f"regeneration: mask_ratio must be in (0, 1), got {ratio}")
    if not 0 < patch <= size:
        raise ProtocolError(f"regeneration: patch size {patch} must be in [1, {size}] (the preprocess size)")
    grid = math.ceil(size / patch)
    n_cells = grid * grid
    cells = np.zeros(n_cells, dtype=bool)
    cells[rng.choice(n_cells, size=min(n_cells, max(1, round(ratio * n_cells))), replace=False)] = True
    full = np.repeat(np.repeat(cells.reshape(grid, grid), patch, axis=0), patch, axis=1)
    return full[:size, :size]


def seeded_masks(rows: np.ndarray, size: int, patch: int, ratio: float, seed: int) -> torch.Tensor:
    """``(B, 1, size, size)`` bool masks, image ``row`` drawn with ``default_rng((seed, patch, row))``."""
    masks = [patch_mask(size, patch, ratio, np.random.default_rng((seed, patch, int(r)))) for r in rows]
    return torch.from_numpy(np.stack(masks))[:, None]


# --------------------------------------------------------------------------- the probe


class RegenerationProbe(nn.Module):
    """Frozen features of a masked image -> the whole image in [0, 1].

    ``(B, C, h, w)`` features (``h = w = 1`` for a global vector, broadcast to
    ``global_grid``) + 2 coordinate channels -> 1x1 conv -> ``n_up`` x (2x
    bilinear upsample, 3x3 conv, GroupNorm, GELU) -> 3x3 conv -> resize to
    ``out_size`` -> added to the logit of ``prior`` -> sigmoid. The last conv
    starts at zero, so an untrained probe predicts ``prior`` (the training mean
    image) and training learns what the features add to it.
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], out_size: int, width: int = 64,
                 prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.grid, self.out_size = grid, out_size
        prior = torch.full((out_size, out_size), 0.5) if prior is None else torch.as_tensor(prior).float()
        self.register_buffer("prior_logit", torch.logit(prior.clamp(1e-3, 1 - 1e-3))[None, None])  # (1, 1, S, S)
        self.stem = nn.Conv2d(in_dim + 2, width, kernel_size=1)
        n_up = max(0, math.ceil(math.log2(out_size / min(grid))))
        self.up = nn.Sequential(*[nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                                nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width),
                                                nn.GELU()) for _ in range(n_up)])
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feats.shape
        if (h, w) != self.grid:
            feats = feats.expand(-1, -1, *self.grid) if (h, w) == (1, 1) else F.interpolate(feats, size=self.grid)
        ys = torch.linspace(-1, 1, self.grid[0], device=feats.device)
        xs = torch.linspace(-1, 1, self.grid[1], device=feats.device)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(b, -1, -1, -1)  # (B, 2, h, w)
        x = self.up(self.stem(torch.cat([feats, coords], dim=1)))
        x = F.interpolate(self.head(x), size=(self.out_size,) * 2, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.prior_logit + x)  # (B, 1, S, S)


class FeatureMap:
    """The frozen encoder's features of masked inputs as a ``(B, C, h, w)`` map, standardised.

    Region features when the encoder has them, else the global vector as ``(B, D, 1, 1)``.
    ``fit`` sets the per-channel mean / std from training features (the probe trains faster on
    unit-scale inputs whatever the encoder's feature scale).
    """

    def __init__(self, encoder: Any, device: str) -> None:
        self.encoder, self.device = encoder, device
        self.regions = "image_regions" in capabilities(encoder)
        self.grid: tuple[int, int] = tuple(encoder.region_grid) if self.regions else (1, 1)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    @torch.no_grad()
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        cuda = torch.device(self.device).type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext():
            if self.regions:
                f = self.encoder.encode_image_regions(x)  # (B, R, Dr)
                h, w = self.grid
                if f.ndim != 3 or f.shape[1] != h * w:
                    raise ProtocolError(f"encode_image_regions gave {tuple(f.shape)}, region_grid is {self.grid}")
                f = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], h, w)  # (B, Dr, h, w)
            else:
                f = self.encoder.encode_image(x)[:, :, None, None]  # (B, D, 1, 1)
        return f.float()

    def fit(self, x: torch.Tensor) -> None:
        f = self.raw(x)
        self.mean = f.mean(dim=(0, 2, 3), keepdim=True)
        self.std = f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std


# --------------------------------------------------------------------------- regeneration


def _masked_input(ctx: EvalContext, images: np.ndarray, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised input with hidden pixels set to 0, original in [0, 1] ``(B, 1, S, S)``)."""
    x = to_model_input(images, ctx.preprocess, ctx.device)
    return x.masked_fill(mask.to(x.device), 0.0), from_model_input(x, ctx.preprocess)


def train_probe(ctx: EvalContext, args: dict[str, Any], mean_image: np.ndarray
                ) -> tuple[RegenerationProbe, FeatureMap]:
    """Fit a ``RegenerationProbe`` on the TRAIN split, encoder frozen (see the module docstring)."""
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng((ctx.seed, 1))
    size, train = ctx.preprocess.image_size, ctx.data.train
    rows = np.arange(len(train))  # the probe's images: the run's label fraction (cohort.label_fraction)
    features = FeatureMap(ctx.encoder, ctx.device)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.sort(rng.choice(rows, size=min(args["batch_size"], len(rows)), replace=False))
        patch = int(rng.choice(args["patch_sizes"]))
        mask = torch.from_numpy(np.stack([patch_mask(size, patch, args["mask_ratio"], rng) for _ in idx]))[:, None]
        x_in, target = _masked_input(ctx, train.images[idx], mask)
        return x_in, target, mask.to(target.device)

    first = batch()[0]
    features.fit(first)  # standardise with one training batch's statistics
    probe = RegenerationProbe(features(first).shape[1], features.grid if features.regions
                              else (args["global_grid"],) * 2, size, args["probe_width"],
                              prior=torch.from_numpy(mean_image)).to(ctx.device)
    opt = torch.optim.AdamW(probe.parameters(), lr=args["probe_lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args["probe_steps"]))
    for _ in range(int(args["probe_steps"])):
        x_in, target, mask = batch()
        pred = probe(features(x_in))
        loss = ((pred - target) ** 2)[mask].mean()  # MSE on the hidden pixels only
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    return probe, features


def _regenerate(ctx: EvalContext, x_in: torch.Tensor, mask: torch.Tensor, probe: Any) -> torch.Tensor:
    """``(B, 1, S, S)`` in [0, 1]: the native regeneration or the probe's."""
    with torch.no_grad():
        if probe is None:
            out = ctx.encoder.regenerate(x_in, mask.to(x_in.device))
            if out.shape != x_in.shape:
                raise ProtocolError(f"regenerate returned {tuple(out.shape)} for input {tuple(x_in.shape)}")
            return from_model_input(out.float(), ctx.preprocess)
        model, features = probe
        return model(features(x_in))


def score(original: np.ndarray, regenerated: np.ndarray, mask: np.ndarray, win_size: int = 7
          ) -> dict[str, np.ndarray]:
    """Per-image ``mse`` / ``psnr`` / ``ssim`` on the hidden pixels, all ``(B, S, S)`` in [0, 1].

    ``regenerated`` is pasted into ``original`` where ``mask`` is True before SSIM (see the module docstring).
    """
    composite = np.where(mask, regenerated, original)
    mse, psnr = np.empty(len(original)), np.empty(len(original))
    for i, (o, r, m) in enumerate(zip(original, composite, mask, strict=True)):
        mse[i] = float(np.mean((o[m].astype(np.float64) - r[m]) ** 2))
        with np.errstate(divide="ignore"):
            psnr[i] = metrics.psnr(o[m][None], r[m][None], data_range=1.0)  # over the hidden pixels
    ssim = metrics.ssim_masked(original, composite, mask, data_range=1.0, win_size=win_size)
    return {"mse": mse, "psnr": np.minimum(psnr, PSNR_CAP_DB), "ssim": np.asarray(ssim)}


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[:, 0].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _mean_image(ctx: EvalContext, batch_size: int, limit: int = 2048) -> np.ndarray:
    """``(S, S)`` in [0, 1]: the mean of (up to ``limit``, evenly spaced) training images."""
    train = ctx.data.train
    rows = np.unique(np.linspace(0, len(train) - 1, num=min(limit, len(train))).round().astype(np.int64))
    total = torch.zeros(ctx.preprocess.image_size, ctx.preprocess.image_size, dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        x = to_model_input(train.images[rows[start:start + batch_size]], ctx.preprocess, ctx.device)
        total += from_model_input(x, ctx.preprocess)[:, 0].double().sum(0).cpu()
    return (total / len(rows)).float().numpy()


def _evaluate(ctx: EvalContext, args: dict[str, Any], probe: Any, mean_image: np.ndarray
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per-image scores of the regeneration and of the mean-image baseline, per patch size; example triplets."""
    test, size = ctx.data.test, ctx.preprocess.image_size
    n = len(test) if args["max_test"] is None else min(len(test), int(args["max_test"]))
    scores: dict[str, dict[str, list]] = {f"p{p}": {"mse": [], "psnr": [], "ssim": []} for p in args["patch_sizes"]}
    baseline: dict[str, dict[str, list]] = {k: {m: [] for m in v} for k, v in scores.items()}
    examples: dict[str, np.ndarray] = {}
    for start in range(0, n, int(args["batch_size"])):
        rows = np.arange(start, min(n, start + int(args["batch_size"])))
        images = test.images[rows]
        for p in args["patch_sizes"]:
            mask = seeded_masks(rows, size, int(p), args["mask_ratio"], ctx.seed)
            x_in, original = _masked_input(ctx, images, mask)
            regenerated = _regenerate(ctx, x_in, mask, probe)
            o, r, m = original[:, 0].cpu().numpy(), regenerated[:, 0].cpu().numpy(), mask[:, 0].numpy()
            mean = np.broadcast_to(mean_image, o.shape)
            for target, out in ((scores, r), (baseline, mean)):
                for metric, values in score(o, out, m, int(args["ssim_win_size"])).items():
                    target[f"p{p}"][metric].append(values)
            if start == 0:
                keep = slice(0, int(args["n_examples"]))
                examples["original"] = _to_uint8(original[keep])
                examples[f"masked_p{p}"] = _to_uint8(from_model_input(x_in[keep], ctx.preprocess))
                composite = torch.where(mask[keep].to(original.device), regenerated[keep], original[keep])
                examples[f"regenerated_p{p}"] = _to_uint8(composite)
    return _concat(scores), _concat(baseline), examples


def _concat(per_scale: dict[str, dict[str, list]]) -> dict[str, dict[str, np.ndarray]]:
    return {scale: {m: np.concatenate(v) for m, v in inner.items()} for scale, inner in per_scale.items()}


def _summary(per_scale: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    out = {f"{metric}_{scale}": float(np.mean(v)) for scale, inner in per_scale.items() for metric, v in inner.items()}
    for metric in ("mse", "psnr", "ssim"):
        out[metric] = float(np.mean([out[f"{metric}_{scale}"] for scale in per_scale]))
    return out


def _args(ctx: EvalContext) -> dict[str, Any]:
    args = ARGS.resolve_or_raise(ctx.args)
    native = "regeneration" in capabilities(ctx.encoder)
    mode = args["mode"] if args["mode"] != "auto" else ("native" if native else "probe")
    if mode == "native" and not native:
        raise ProtocolError("regeneration: mode native needs an encoder with the regeneration capability")
    if mode == "probe" and "image" not in capabilities(ctx.encoder):
        raise ProtocolError("regeneration: the probe needs an image encoder (encode_image)")
    for p in args["patch_sizes"]:  # a patch larger than the encoder's input size is known only now
        patch_mask(ctx.preprocess.image_size, p, args["mask_ratio"], np.random.default_rng(0))
    ARGS.check_run(ctx, args)
    return {**args, "mode": mode}


def run(ctx: EvalContext) -> ProtocolResult:
    """Regenerate hidden patches of the test images and score them (see the module docstring)."""
    args = _args(ctx)
    if callable(getattr(ctx.encoder, "eval", None)):
        ctx.encoder.eval()  # frozen: BatchNorm statistics and dropout off, for the probe and native alike
    mean_image = _mean_image(ctx, int(args["batch_size"]))
    probe = train_probe(ctx, args, mean_image) if args["mode"] == "probe" else None
    per_scale, baseline, examples = _evaluate(ctx, args, probe, mean_image)
    n = len(next(iter(per_scale.values()))["psnr"])
    patients = ctx.data.test.frame["patient_id"].astype(str).to_numpy()[:n]
    ci = {}
    for metric in ("psnr", "ssim"):
        per_image = np.mean([per_scale[s][metric] for s in per_scale], axis=0)  # (n,) averaged over scales
        boot = metrics.bootstrap_ci(np.mean, per_image, groups=patients, n=int(args["n_bootstrap"]), seed=ctx.seed)
        ci[metric] = (boot.lo, boot.hi)
    details = {"mode": args["mode"], "patch_sizes": args["patch_sizes"], "mask_ratio": args["mask_ratio"],
               "n_test": n, "pixel_space": "[0, 1] (preprocess.from_model_input)", "psnr_cap_db": PSNR_CAP_DB,
               "mean_image_baseline": _summary(baseline)}
    if probe is not None:
        details["probe"] = {"features": "regions" if probe[1].regions else "global", "grid": list(probe[1].grid),
                            "steps": args["probe_steps"], "lr": args["probe_lr"], "width": args["probe_width"]}
    return ProtocolResult(metrics=_summary(per_scale), ci=ci, details=details, predictions=examples)
