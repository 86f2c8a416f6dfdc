"""Zero-shot phrase grounding: where does a finding's phrase land among the image regions?

For encoders with the ``localization`` capability (region features and text in
one joint space, ``harness.encoders.capabilities``). Nothing is trained.

For every test image with a ground-truth box (``TaskData.extras["boxes"]``, a
DataFrame ``image_id, label, x0, y0, x1, y1`` normalised to [0, 1], from the
NIH ``BBox_List_2017.csv``), and every label boxed on it (a *case*; several
boxes of one label on one image are one case whose target is their union):

1. The phrase embedding of the label is the mean of the L2-normalised
   embeddings of ``templates`` (default ``"there is {label}"``), each formatted
   with the label lower-cased and ``_`` read as a space (``Pleural_Thickening`` ->
   ``pleural thickening``), then normalised again (CLIP-style prompt ensembling).
2. The similarity map is the cosine of each region feature with the phrase, on
   the encoder's ``region_grid``, bilinearly upsampled to the preprocess size and
   min-max normalised per image. A map is **flat** when its span on the grid
   (max - min) is at most ``FLAT_RTOL`` of its magnitude (max |cosine|), or at most
   ``FLAT_ATOL`` (float32 rounding of a cosine): such a map points nowhere (a 1x1
   region grid, a constant encoder), and min-max stretching its rounding noise would
   make a pattern of nothing. A flat map is all 0: no pointing-game hit and IoU 0
   (counted in ``details["flat_maps"]``).
3. **Pointing game**: a hit when the map's maximum lies inside the box(es)
   (``metrics.pointing_game``). **IoU**: the map thresholded at ``threshold``
   (``map >= threshold``) against the box mask (``metrics.mask_iou``). A box
   covers every pixel it overlaps, so even a sub-pixel box is non-empty.

The same is done for a uniform-random map drawn on the region grid (seeded),
reported as ``details["random_baseline"]``: a method must beat it to claim
localization. Per-label values are in ``details["per_label"]``. CIs resample patients (none over
fewer than ``metrics.MIN_PATIENTS``: said in ``details["not_measurable"]``); every run keeps each
case's hit and IoU with an anonymous patient index (``harness.metrics.paired``) for the
leaderboard's paired bootstrap.

Arguments: ``ARGS`` below (names, types, defaults and ranges, checked by
``harness.protocols.args`` when the task loads and again when the protocol runs).

Example task fragment::

    protocol: localization
    requires: [image_regions, text, localization]
    protocol_args: {templates: ["there is {label}", "{label}"], threshold: 0.5}
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from harness import metrics
from harness.data.schema import DataError
from harness.encoders import capabilities
from harness.features import extract_features, split_cache_key
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError
from harness.protocols.retrieval import encode_texts

BOX_COLUMNS = ("image_id", "label", "x0", "y0", "x1", "y1")
# A grid map whose span is within this of its magnitude is flat (module docstring): rounding, not a place.
FLAT_RTOL = 1e-4
FLAT_ATOL = 1e-6  # cosines lie in [-1, 1]; float32 rounds them at about 1e-7


def _template_problem(template: str) -> str | None:
    """Why ``template`` cannot phrase a label (``phrase`` formats it with ``label=`` only), or None."""
    if "{label}" not in template:
        return f"template {template!r} must contain '{{label}}'"
    try:
        template.format(label="x")
    except (KeyError, IndexError, ValueError) as exc:  # "{finding}", "{0}", a lone "{"
        return f"template {template!r} does not format with only {{label}}: {type(exc).__name__} {exc}"
    return None


ARGS = ProtocolArgs(
    "localization",
    {
        "templates": Arg(str, ["there is {label}"], "prompt templates, averaged (CLIP-style ensembling)", many=True,
                         check=_template_problem),
        "threshold": Arg(float, 0.5, "the normalised map is thresholded here for the IoU", gt=0, lt=1),
        "batch_size": Arg(int, 32, "region-feature and phrase batch size", ge=1),
        "n_bootstrap": Arg(int, 1000, "patient resamples for the CIs", ge=1),
    },
    metrics=lambda a: ("pointing_game", "iou"), zero_shot=True,
    requires=lambda a: ("image_regions", "text", "localization"))


def phrase(template: str, label: str) -> str:
    """``"there is {label}"`` + ``"Pleural_Thickening"`` -> ``"there is pleural thickening"``."""
    return template.format(label=label.replace("_", " ").lower())


def check_boxes(boxes: Any) -> tuple[pd.DataFrame, int]:
    """The boxes with coordinates, validated (0 <= x0 <= x1 <= 1, same for y), and how many had none.

    A box whose normalised coordinates are NaN (the adapter could not read its image's size) is
    left out and counted; any other bad value is a ``DataError`` naming the row.
    """
    if not isinstance(boxes, pd.DataFrame):
        raise ProtocolError("localization: the task's dataset provides no boxes (TaskData.extras['boxes'])")
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise DataError(f"boxes: missing column(s) {missing}")
    boxes = boxes.reset_index(drop=True)
    coords = boxes[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
    unknown = np.isnan(coords).any(1)
    inside = ((coords >= 0) & (coords <= 1)).all(1)
    bad = ~unknown & (~inside | (coords[:, 0] > coords[:, 2]) | (coords[:, 1] > coords[:, 3]))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"boxes: row {i} (label {boxes['label'].iloc[i]!r}) has coordinates "
                        f"{coords[i].tolist()}, expected 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1")
    return boxes[~unknown].reset_index(drop=True), int(unknown.sum())


def box_mask(coords: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` bool union of ``(K, 4)`` normalised boxes; a box covers every pixel it overlaps."""
    mask = np.zeros((size, size), dtype=bool)
    for x0, y0, x1, y1 in coords:
        c0, r0 = int(np.floor(x0 * size)), int(np.floor(y0 * size))
        c1, r1 = max(c0 + 1, int(np.ceil(x1 * size))), max(r0 + 1, int(np.ceil(y1 * size)))
        mask[min(r0, size - 1):r1, min(c0, size - 1):c1] = True
    return mask


def region_similarity(regions: torch.Tensor, phrases: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, h, w)`` cosine of each of the ``(B, R, D)`` regions with its ``(B, D)`` phrase, on the grid."""
    sim = torch.einsum("brd,bd->br", F.normalize(regions, dim=-1), F.normalize(phrases, dim=-1))  # (B, R)
    return sim.reshape(-1, 1, *grid)


def similarity_maps(regions: torch.Tensor, phrases: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """``(B, size, size)`` min-max normalised cosine maps of ``(B, R, D)`` regions vs ``(B, D)`` phrases."""
    return upsample_normalise(region_similarity(regions, phrases, grid), size)


def flat_maps(grid_maps: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: is each ``(B, 1, h, w)`` map flat: span <= max(``FLAT_RTOL`` x magnitude, ``FLAT_ATOL``)."""
    flat = grid_maps.reshape(len(grid_maps), -1).double()
    span = flat.amax(dim=1) - flat.amin(dim=1)
    magnitude = flat.abs().amax(dim=1)
    return span <= torch.clamp(FLAT_RTOL * magnitude, min=FLAT_ATOL)


def upsample_normalise(grid_maps: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 1, h, w)`` -> bilinear ``(B, size, size)``, min-max normalised per map (a flat map is all 0).

    Flatness is judged on the grid (``flat_maps``), before upsampling adds its own rounding.
    """
    maps = F.interpolate(grid_maps.float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    keep = ~flat_maps(grid_maps)[:, None, None] & (span > 0)
    return torch.where(keep, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))


def score_maps(maps: np.ndarray, masks: np.ndarray, threshold: float, flat: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per case: pointing-game hit (0 / 1) and IoU of ``maps >= threshold`` with ``masks``.

    A ``flat`` map (``flat_maps``) points nowhere: no hit and IoU 0, whatever its first pixel is.
    """
    hits = np.array([metrics.pointing_game(m[None], t[None]) for m, t in zip(maps, masks, strict=True)])
    ious = metrics.mask_iou(maps >= threshold, masks)
    if flat is not None:
        flat = np.asarray(flat, dtype=bool)
        hits, ious = np.where(flat, 0.0, hits), np.where(flat, 0.0, ious)
    return hits, ious


def _cases(ctx: EvalContext, boxes: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (test image, label): its test row and its boxes; and the count of boxes off the test split."""
    row_of = pd.Series(np.arange(len(ctx.data.test)), index=ctx.data.test.frame["image_id"].astype(str))
    image_ids = boxes["image_id"].astype(str)
    inside = image_ids.isin(row_of.index)
    kept = boxes[inside.to_numpy()].assign(row=image_ids[inside].map(row_of).to_numpy())
    cases = (kept.groupby(["row", "label"], sort=True)[["x0", "y0", "x1", "y1"]]
             .apply(lambda g: g.to_numpy(dtype=np.float64)).rename("coords").reset_index())
    return cases, int((~inside).sum())


def _phrase_embeddings(ctx: EvalContext, labels: list[str], templates: list[str], batch_size: int
                       ) -> dict[str, torch.Tensor]:
    texts = [phrase(t, label) for label in labels for t in templates]
    emb = F.normalize(encode_texts(ctx.encoder, texts, device=ctx.device, batch_size=batch_size), dim=-1)
    emb = F.normalize(emb.reshape(len(labels), len(templates), -1).mean(1), dim=-1)  # (L, D) prompt ensemble
    return dict(zip(labels, emb, strict=True))


def _args(ctx: EvalContext) -> dict[str, Any]:
    args = ARGS.resolve_or_raise(ctx.args)
    ARGS.check_run(ctx, args)  # zero-shot: fraction 1 only; pointing_game / iou only
    if "localization" not in capabilities(ctx.encoder):
        raise ProtocolError("localization: the encoder needs region features and text in one joint space "
                            "(capability 'localization')")
    return args


def _summary(hits: np.ndarray, ious: np.ndarray) -> dict[str, float]:
    return {"pointing_game": float(np.mean(hits)), "iou": float(np.nanmean(ious))}


def run(ctx: EvalContext) -> ProtocolResult:
    """Ground each boxed finding's phrase on its image and score the maps (see the module docstring)."""
    args = _args(ctx)
    boxes, no_coordinates = check_boxes(ctx.data.extras.get("boxes"))
    cases, outside = _cases(ctx, boxes)
    if cases.empty:
        raise ProtocolError("localization: no test image has a box")
    rows = np.unique(cases["row"].to_numpy())
    key = {**split_cache_key(ctx, "test"), "subset": "boxed",
           "subset_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}
    regions = extract_features(ctx.encoder, ctx.data.test.images.subset(rows), ctx.preprocess, kind="regions",
                               batch_size=args["batch_size"], device=ctx.device, cache_key=key,
                               progress=ctx.progress)  # (n_images, R, Dr)
    regions = np.ascontiguousarray(regions)  # cache hit or miss: the same layout, the same bits
    grid, size = tuple(ctx.encoder.region_grid), ctx.preprocess.image_size
    if regions.shape[1] != grid[0] * grid[1]:
        raise ProtocolError(f"localization: {regions.shape[1]} regions do not fill region_grid {grid}")
    phrases = _phrase_embeddings(ctx, sorted(cases["label"].unique()), list(args["templates"]),
                                 args["batch_size"])
    if next(iter(phrases.values())).shape[0] != regions.shape[2]:
        raise ProtocolError("localization: region and text features differ in size; no joint space")
    feature_row = {r: i for i, r in enumerate(rows)}
    rng = torch.Generator().manual_seed(ctx.seed)
    model, random = ([], []), ([], [])
    n_flat = 0
    for start in range(0, len(cases), 64):  # chunks keep the (B, S, S) maps small
        chunk = cases.iloc[start:start + 64]
        masks = np.stack([box_mask(c, size) for c in chunk["coords"]])
        reg = torch.from_numpy(regions[[feature_row[r] for r in chunk["row"]]])
        grid_maps = region_similarity(reg, torch.stack([phrases[label] for label in chunk["label"]]), grid)
        flat = flat_maps(grid_maps).numpy()
        n_flat += int(flat.sum())
        noise = torch.rand(len(chunk), 1, *grid, generator=rng)
        for out, g, f in ((model, grid_maps, flat), (random, noise, flat_maps(noise).numpy())):
            hits, ious = score_maps(upsample_normalise(g, size).numpy(), masks, args["threshold"], f)
            out[0].append(hits)
            out[1].append(ious)
    hits, ious = (np.concatenate(x) for x in model)
    random_hits, random_ious = (np.concatenate(x) for x in random)
    per_label = {label: _summary(hits[idx], ious[idx]) for label, idx in cases.groupby("label").indices.items()}
    patients = ctx.data.test.frame["patient_id"].astype(str).to_numpy()[cases["row"].to_numpy()]
    kept = metrics.unit_predictions(patients, {"pointing_game": hits, "iou": ious})
    ci, not_measurable = {}, {}
    for name, values, fn in (("pointing_game", hits, np.mean), ("iou", ious, np.nanmean)):
        boot = metrics.bootstrap_ci(fn, values, groups=kept["groups"], n=args["n_bootstrap"], seed=ctx.seed)
        if boot.reason:
            not_measurable[f"ci of {name}"] = boot.reason
        else:
            ci[name] = (boot.lo, boot.hi)
    details = {"n_cases": len(cases), "n_images": len(rows), "boxes_outside_test": outside,
               "boxes_without_coordinates": no_coordinates,
               "templates": list(args["templates"]), "threshold": args["threshold"],
               "region_grid": list(grid), "map_size": size, "per_label": per_label, "flat_maps": n_flat,
               "flat_rule": f"span <= max({FLAT_RTOL:g} x max |cosine|, {FLAT_ATOL:g}) on the grid: no hit, IoU 0",
               "random_baseline": _summary(random_hits, random_ious),
               "bootstrap": {"n": args["n_bootstrap"], "seed": ctx.seed, "unit": "patient"}}
    if not_measurable:
        details["not_measurable"] = not_measurable
    return ProtocolResult(metrics=_summary(hits, ious), ci=ci, details=details,
                          predictions={"pointing_hits": hits.astype(np.uint8), "iou": ious, **kept})
