"""Render one synthetic chest radiograph: anatomy + findings -> 8-bit image + boxes.

``render`` composes the density map (``anatomy``), lets every finding change it
(``lesions``), then turns density into detector brightness in the source's
*style*: exposure, gamma, blur, noise, collimation and a side marker, and for
MIMIC-CXR-JPG the histogram equalisation the real JPGs went through. Each
source (institution) has its own style so that mixed-source pretraining meets a
real domain shift.

Ground truth: one box per drawn finding region, in pixel coordinates of the
returned image (x, y = top-left corner, w, h), following the patient's pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from harness.synth import lesions
from harness.synth.anatomy import (
    Anatomy,
    Canvas,
    Geometry,
    body_density,
    bones,
    frontal_geometry,
    lateral_geometry,
    lung_markings,
    power,
    rib_phase,
    step,
)
from harness.synth.findings import Finding


@dataclass(frozen=True)
class ImageStyle:
    """How one institution's detector and post-processing look."""

    exposure: float = 2.2       # density -> attenuation gain
    gamma: float = 1.0
    noise: float = 0.02         # std of additive noise (fraction of full scale)
    blur: float = 0.7           # gaussian sigma in pixels
    equalize: bool = False      # MIMIC-CXR-JPG: histogram-equalised
    black_level: float = 0.02
    white_level: float = 0.98
    marker_corner: int = 0      # 0..3: where the side marker sits
    collimation: float = 0.0    # fraction of each border blacked out (shutters)


@dataclass(frozen=True)
class Box:
    finding: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray          # (H, W) uint8
    boxes: tuple[Box, ...]


def _mask_box(name: str, sl: tuple[slice, slice], mask: np.ndarray, thr: float = 0.5) -> Box | None:
    rows = np.flatnonzero((mask > thr).any(axis=1))
    cols = np.flatnonzero((mask > thr).any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    i0 = (sl[0].start or 0) + int(rows[0])
    j0 = (sl[1].start or 0) + int(cols[0])
    return Box(name, float(j0), float(i0), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def _density(g: Geometry, found: tuple[Finding, ...], rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    boxes: list[Box] = []

    def add(name: str, masks: list[lesions.Mask]) -> None:
        boxes.extend(b for sl, m in masks if (b := _mask_box(name, sl, m)) is not None)

    layers = lesions.Layers(body_density(g), np.ones_like(g.lung))
    for f in found:
        if f.name in lesions.LUNG_STAGE:
            add(f.name, lesions.LUNG_STAGE[f.name](g, f, layers, rng))
    layers.density += 0.07 * lung_markings(g) * layers.keep * g.lung
    solid = np.maximum(g.heart, g.mediastinum)
    layers.density += np.maximum(0.0, 0.68 - layers.density) * solid
    cv = g.canvas  # the trachea: an air column above the carina
    tu = cv.u if g.view == "frontal" else cv.u + 0.02 - 0.15 * (cv.v + 0.3)
    layers.density -= 0.1 * step((0.028 - np.abs(tu)) / 0.006) * step((-0.3 - cv.v) / 0.02) \
        * step((cv.v + 1.0) / 0.05)
    for f in found:
        if f.name == "cardiomegaly":
            add(f.name, [(lesions.FULL, g.heart * (1 - g.below))])
        elif f.name == "enlarged_cardiomediastinum" and g.view == "frontal":
            add(f.name, [(lesions.FULL, g.mediastinum * step((g.canvas.anatomy.heart_y - 0.12 - g.canvas.v) / 0.02))])
        elif f.name == "hernia":
            add(f.name, lesions.OVERLAY_STAGE[f.name](g, f, layers, rng))
    phase = rib_phase(g) if g.view == "frontal" else None
    for f in found:
        if f.name == "fracture" and phase is not None:
            add(f.name, lesions.fracture_phase(g, f, phase))
    layers.density += bones(g, phase)
    for f in found:
        if f.name == "support_devices":
            add(f.name, lesions.support_devices(g, f, layers, rng))
    return layers.density, boxes


def _to_pixels(density: np.ndarray, style: ImageStyle, rng: np.random.Generator) -> np.ndarray:
    exposure = style.exposure * float(rng.uniform(0.88, 1.12))  # per-image technique
    img = (1 - np.exp(-exposure * np.clip(density, 0, None))) / (1 - np.exp(-exposure))
    if style.blur > 0:
        img = ndimage.gaussian_filter(img.astype(np.float32), style.blur)
    img = power(np.clip(img, 0, 1), style.gamma * float(rng.uniform(0.92, 1.08)))
    img += style.noise * np.sqrt(1.05 - img) * rng.standard_normal(img.shape, dtype=np.float32)
    img = style.black_level + (style.white_level - style.black_level) * np.clip(img, 0, 1)
    h, w = img.shape
    if style.collimation > 0:
        c = int(style.collimation * min(h, w))
        img[:, :c] = img[:, w - c:] = 0.03
    _marker(img, style.marker_corner)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if style.equalize:
        hist = np.bincount(out.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        lut = np.clip(np.round((cdf - cdf[cdf > 0][0]) / max(cdf[-1] - cdf[cdf > 0][0], 1) * 255), 0, 255)
        out = lut.astype(np.uint8)[out]
    return out


def _marker(img: np.ndarray, corner: int) -> None:
    """A small bright side marker (an 'L' block) near one corner."""
    h, w = img.shape
    s = max(3, min(h, w) // 32)
    i0 = h // 14 if corner in (0, 1) else h - h // 14 - 2 * s
    j0 = w // 14 if corner in (0, 2) else w - w // 14 - 2 * s
    img[i0:i0 + 2 * s, j0:j0 + max(1, s // 2)] = 0.97
    img[i0 + 2 * s - max(1, s // 2):i0 + 2 * s, j0:j0 + s + 1] = 0.97


def render(anatomy: Anatomy, found: tuple[Finding, ...], *, view: str, size: tuple[int, int],
           style: ImageStyle, rng: np.random.Generator) -> Rendered:
    """Draw one view.

    Args:
        anatomy: the patient's body (``anatomy.sample_anatomy``), already pose-jittered per image.
        found: findings of the study (those a view cannot show are skipped, without a box).
        view: ``frontal`` (PA or AP: AP adds magnification upstream) or ``lateral``.
        size: (rows, columns) of the output.
        style: the institution's detector style.
        rng: the image's own generator (texture, noise): same inputs -> same bytes.
    """
    h, w = size
    adjusted = lesions.adjust_anatomy(anatomy, found)
    cv = Canvas(adjusted, h, w)
    g = frontal_geometry(cv) if view == "frontal" else lateral_geometry(cv)
    lesion_rng, detector_rng = rng.spawn(2)  # the detector noise does not depend on what was drawn
    density, boxes = _density(g, found, lesion_rng)
    return Rendered(_to_pixels(density, style, detector_rng), tuple(boxes))
