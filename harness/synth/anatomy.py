"""Thorax anatomy for the renderer: patient parameters, view geometry, base densities.

The image is composed as a *density* map D (0 = air outside the body, ~0.5 soft
tissue, ~0.2 aerated lung, ~0.7 heart and mediastinum, bone adds ~0.2, metal ~1)
that ``render`` turns into pixel brightness. Geometry lives in *anatomical
coordinates* (u, v): u across the chest (negative = the image's left = the
patient's RIGHT on a frontal view; anterior on a lateral view), v downwards,
roughly -1..1 over the field of view. Each patient's size, position and rotation
map (u, v) onto the detector; a box drawn in (u, v) is mapped back to pixels, so
ground-truth boxes follow every patient's pose.

Everything is vectorised numpy over the full pixel grid (or a window of it for
small structures): rendering a 256x256 view takes a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Anatomy:
    """One patient's body: stable across the patient's studies (plus pose jitter per image)."""

    scale: float = 0.92          # thorax size in the field of view
    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation: float = 0.0        # radians, in the detector plane
    thorax_width: float = 0.78   # half-width of the rib cage at the bases
    apex_y: float = -0.78        # lung apices
    diaphragm_y: float = 0.52    # costophrenic level; the right hemidiaphragm sits 0.03 higher
    dome: float = 0.14           # diaphragm dome height
    right_raise: float = 0.0     # extra elevation of a hemidiaphragm (volume loss), >= 0
    left_raise: float = 0.0
    heart_ctr: float = 0.45      # cardiothoracic ratio
    heart_y: float = 0.28
    mediastinum_width: float = 0.1
    rib_spacing: float = 0.145
    rib_phase: float = 0.0
    soft_tissue: float = 1.0     # body habitus: > 1 heavier
    female: bool = False
    texture_seed: int = 0        # lung-marking pattern


def sample_anatomy(rng: np.random.Generator, *, age: float, sex: str) -> Anatomy:
    """A patient's body; older patients get a slightly larger heart and lower diaphragm."""
    old = max(0.0, (age - 40.0) / 50.0)
    return Anatomy(
        scale=float(rng.uniform(0.86, 1.0)),
        thorax_width=float(rng.uniform(0.72, 0.82) * (0.97 if sex == "F" else 1.0)),
        apex_y=float(rng.uniform(-0.82, -0.74)),
        diaphragm_y=float(rng.uniform(0.46, 0.56) + 0.03 * old),
        dome=float(rng.uniform(0.11, 0.17)),
        heart_ctr=float(rng.uniform(0.40, 0.48) + 0.03 * old),
        heart_y=float(rng.uniform(0.24, 0.31)),
        mediastinum_width=float(rng.uniform(0.085, 0.11)),
        rib_spacing=float(rng.uniform(0.135, 0.155)),
        rib_phase=float(rng.uniform(0.0, 1.0)),
        soft_tissue=float(rng.lognormal(0.0, 0.12)),
        female=sex == "F",
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def step(z: np.ndarray) -> np.ndarray:
    """Smooth 0..1 step of a signed distance already divided by the edge width."""
    return 0.5 + 0.5 * np.tanh(z)


@lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1)[None, :]
    y = (((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1) * (h / w))[:, None]
    return x, y


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Unit-ish variance noise with about ``cells`` blobs across: bilinear upsampling of a coarse grid.

    Separable: the coarse rows are interpolated first (a small array), then the columns, so only
    two gathers run over the full grid (no BLAS: its threads only contend with worker processes).
    """
    h, w = shape
    coarse = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    y0, fy = _interpolation(max(h, 1), cells)
    x0, fx = _interpolation(max(w, 1), cells)
    rows = coarse[y0] * (1 - fy[:, None]) + coarse[y0 + 1] * fy[:, None]  # (h, cells + 2)
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


@lru_cache(maxsize=64)
def _interpolation(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour and fraction of linear interpolation at ``linspace(0, cells, n)``."""
    x = np.linspace(0, cells, n, dtype=np.float32)
    x0 = x.astype(np.int32)
    return x0, x - x0


def power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p`` for ``x >= 0`` as ``exp(p log x)``: several times faster than numpy's float power."""
    return np.exp(np.float32(p) * np.log(np.maximum(x, np.float32(1e-30))))


class Canvas:
    """Pixel grid <-> anatomical coordinates for one image of one patient."""

    def __init__(self, anatomy: Anatomy, h: int, w: int) -> None:
        self.anatomy, self.h, self.w = anatomy, h, w
        x, y = _grid(h, w)
        self._c, self._s = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        dx, dy = x - anatomy.shift_x, y - anatomy.shift_y
        k = 1.0 / anatomy.scale
        self.u = ((self._c * dx + self._s * dy) * k).astype(np.float32)   # (H, W)
        self.v = ((-self._s * dx + self._c * dy) * k).astype(np.float32)  # (H, W)

    def pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(column, row) pixel coordinates of anatomical points."""
        an = self.anatomy
        x = an.scale * (self._c * u - self._s * v) + an.shift_x
        y = an.scale * (self._s * u + self._c * v) + an.shift_y
        return (x + 1) * self.w / 2 - 0.5, (y * self.w / self.h + 1) * self.h / 2 - 0.5

    def window(self, u0: float, v0: float, u1: float, v1: float) -> tuple[slice, slice]:
        """Pixel slices covering the anatomical rectangle (empty slices when off-image)."""
        j, i = self.pixels(np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1]))
        i0, i1 = int(max(0, math.floor(i.min()) - 1)), int(min(self.h, math.ceil(i.max()) + 2))
        j0, j1 = int(max(0, math.floor(j.min()) - 1)), int(min(self.w, math.ceil(j.max()) + 2))
        return slice(i0, max(i0, i1)), slice(j0, max(j0, j1))


@dataclass
class Geometry:
    """Masks shared by the base composition and the finding drawers (full-grid arrays)."""

    canvas: Canvas
    view: str            # "frontal" | "lateral"
    lung: np.ndarray     # aerated lung field, 0..1
    side: np.ndarray     # -1 image-left (patient right) / +1 (frontal); zeros on a lateral
    heart: np.ndarray
    mediastinum: np.ndarray
    below: np.ndarray    # below the diaphragm (abdomen)

    # scalar helpers for placing things on this patient's lungs
    def lung_lateral(self, v: float) -> float:
        an = self.canvas.anatomy
        return an.thorax_width * (1 - 0.42 * math.exp(-max(v - an.apex_y, 0.0) / 0.22))

    def costophrenic(self, side: str) -> float:
        an = self.canvas.anatomy
        if side == "right":
            return an.diaphragm_y - 0.03 - an.right_raise
        return an.diaphragm_y - an.left_raise

    def place(self, side: str, x: float, y: float) -> tuple[float, float]:
        """Anatomical (u, v) of a place given relative to the lung (see ``findings``)."""
        an = self.canvas.anatomy
        if self.view == "lateral":
            v = an.apex_y + 0.1 + y * (an.diaphragm_y - an.apex_y - 0.25)
            u = -0.4 + 0.75 * ((x * 7.31 + y * 3.7) % 1.0)   # depth is not in the frontal place
            return u, v
        sign = -1.0 if side == "right" else 1.0
        v = an.apex_y + 0.08 + y * (self.costophrenic(side or "left") - an.apex_y - 0.14)
        medial = 0.1
        return sign * (medial + x * (self.lung_lateral(v) - 0.05 - medial)), v


def diaphragm(u: np.ndarray, an: Anatomy) -> np.ndarray:
    """v of the diaphragm surface under each u (frontal): domes peak mid-hemithorax."""
    a = np.abs(u)
    level = np.where(u < 0, np.float32(an.diaphragm_y - 0.03 - an.right_raise),
                     np.float32(an.diaphragm_y - an.left_raise))
    return level - an.dome * np.maximum(0.0, 1 - ((a - 0.35) / 0.45) ** 2)


def frontal_geometry(cv: Canvas) -> Geometry:
    an, u, v = cv.anatomy, cv.u, cv.v
    a = np.abs(u)
    e = 0.012
    lateral = an.thorax_width * (1 - 0.42 * np.exp(-np.maximum(v - an.apex_y, 0) / 0.22))
    top = an.apex_y + 0.9 * (a - 0.32) ** 2
    d = diaphragm(u, an)
    lung = step((lateral - a) / e) * step((a - 0.06) / e) * step((d - v) / e) * step((v - top) / e)
    hw = an.heart_ctr * an.thorax_width
    hh = 0.34 + 0.25 * (an.heart_ctr - 0.45)
    heart = step((1 - ((u - 0.28 * hw) / hw) ** 2 - ((v - an.heart_y + 0.06) / hh) ** 2) / 0.08)
    mw = an.mediastinum_width * (1 + 0.25 * step((v + 0.5) / 0.1))
    knob_r = 0.55 * an.mediastinum_width
    knob = step((knob_r - np.sqrt((u - 0.9 * an.mediastinum_width) ** 2 + (v + 0.38) ** 2)) / 0.01)
    medi = np.maximum(step((mw - np.abs(u - 0.01)) / 0.012) * step((an.heart_y - v) / 0.05), knob)
    below = step((v - d) / 0.015)
    return Geometry(cv, "frontal", lung.astype(np.float32), np.sign(u).astype(np.float32),
                    heart.astype(np.float32), medi.astype(np.float32), below.astype(np.float32))


def lateral_geometry(cv: Canvas) -> Geometry:
    an, u, v = cv.anatomy, cv.u, cv.v
    e = 0.014
    d = an.diaphragm_y + 0.04 - an.dome * np.maximum(0.0, 1 - ((u + 0.05) / 0.75) ** 2)
    ellipse = ((u - 0.05) / 0.66) ** 2 + ((v - (an.apex_y + 0.7)) / 0.78) ** 2
    lung = step((1 - ellipse) / 0.05) * step((d - v) / e) * step((0.58 - u) / e)
    s = an.heart_ctr / 0.45
    heart = step((1 - ((u + 0.22) / (0.3 * s)) ** 2 - ((v - an.heart_y - 0.03) / (0.22 * s)) ** 2) / 0.08)
    medi = np.zeros_like(u)  # the lateral mediastinum is seen through: only the trachea shows (render)
    below = step((v - d) / 0.015)
    return Geometry(cv, "lateral", lung.astype(np.float32), np.zeros_like(u),
                    heart.astype(np.float32), medi.astype(np.float32), below.astype(np.float32))


def body_density(g: Geometry) -> np.ndarray:
    """Soft tissue of the body (the air around it stays 0), abdomen and lung lucency."""
    cv = g.canvas
    an, u, v = cv.anatomy, cv.u, cv.v
    if g.view == "frontal":
        half = (an.thorax_width + 0.12 + 0.05 * (an.soft_tissue - 1)) * np.sqrt(
            np.clip((v + 1.25) / 0.55, 0.04, 1.0))
        body = step((half - np.abs(u)) / 0.02)
    else:
        half = (0.8 + 0.05 * (an.soft_tissue - 1)) * np.sqrt(np.clip((v + 1.3) / 0.5, 0.05, 1.0))
        body = step((half - np.abs(u - 0.03)) / 0.02)
    dens = (0.48 + 0.05 * (an.soft_tissue - 1)) * body
    dens += 0.1 * g.below * body
    dens -= 0.32 * g.lung
    if an.female and g.view == "frontal":  # breast shadows over the lower lateral zones
        breast = step((0.3 - np.sqrt(((np.abs(u) - 0.5) / 1.2) ** 2 + ((v - 0.38) / 0.8) ** 2)) / 0.05)
        dens += 0.06 * breast * body
    return dens.astype(np.float32)


def lung_markings(g: Geometry) -> np.ndarray:
    """Vessel-like network, densest at the hila (fades towards the periphery)."""
    cv = g.canvas
    rng = np.random.default_rng(cv.anatomy.texture_seed)
    n = smooth_noise(rng, (cv.h, cv.w), 14) + 0.5 * smooth_noise(rng, (cv.h, cv.w), 30)
    ridges = np.exp(-(n / 0.35) ** 2)
    if g.view == "frontal":
        hilum = np.exp(-((np.abs(cv.u) - 0.2) ** 2 / 0.12 + (cv.v + 0.05) ** 2 / 0.2))
    else:
        hilum = np.exp(-((cv.u - 0.05) ** 2 / 0.15 + (cv.v + 0.05) ** 2 / 0.2))
    return (ridges * (0.35 + 0.65 * hilum)).astype(np.float32)


def rib_phase(g: Geometry) -> np.ndarray:
    """Posterior-rib phase: rib k occupies floor(phase) == k (frontal)."""
    cv = g.canvas
    an, a = cv.anatomy, np.abs(cv.u)
    return (cv.v - rib_curve(a) - an.apex_y - an.rib_phase * an.rib_spacing) / an.rib_spacing


def rib_curve(a: np.ndarray | float) -> np.ndarray | float:
    """Posterior ribs leave the spine level and curve down towards the chest wall."""
    return -0.12 * a + 0.5 * a * a


def rib_band(phase: np.ndarray) -> np.ndarray:
    return power(np.clip(1 - np.abs(phase - np.floor(phase) - 0.5) / 0.19, 0, 1), 0.6)


def bones(g: Geometry, phase: np.ndarray | None) -> np.ndarray:
    """Ribs, clavicles and spine (frontal) or spine, sternum and faint ribs (lateral)."""
    cv = g.canvas
    an, u, v = cv.anatomy, cv.u, cv.v
    if g.view == "lateral":
        spine = step((0.085 - np.abs(u - 0.55 - 0.05 * v)) / 0.012) * (0.7 + 0.3 * np.cos(2 * np.pi * v / 0.12))
        sternum = step((0.025 - np.abs(u + 0.68 + 0.08 * v)) / 0.008) * step((0.25 - np.abs(v + 0.25)) / 0.02)
        ribs = 0.3 * rib_band((v - 0.4 * u) / an.rib_spacing) * g.lung
        return (0.2 * spine + 0.14 * sternum + 0.12 * ribs).astype(np.float32)
    a = np.abs(u)
    cage = step((an.thorax_width + 0.05 - a) / 0.015) * step((v - an.apex_y + 0.08) / 0.015) \
        * step((an.diaphragm_y + 0.1 - v) / 0.03) * step((a - 0.07) / 0.01)
    posterior = rib_band(phase) * cage
    anterior = 0.45 * rib_band((v + 0.4 * a - an.apex_y) / (1.3 * an.rib_spacing)) * cage * step((a - 0.15) / 0.02)
    # clavicles: segment from the sternal notch up and out to the shoulder
    p0u, p0v, p1u, p1v = 0.08, an.apex_y - 0.02, 0.68, an.apex_y - 0.17
    du, dv = p1u - p0u, p1v - p0v
    t = np.clip(((a - p0u) * du + (v - p0v) * dv) / (du * du + dv * dv), 0, 1)
    dist = np.sqrt((a - p0u - t * du) ** 2 + (v - p0v - t * dv) ** 2)
    clavicle = step((0.03 - dist) / 0.006)
    spine = step((0.065 - a) / 0.01) * (0.7 + 0.3 * np.cos(2 * np.pi * v / 0.11))
    return (0.17 * posterior + 0.07 * anterior + 0.2 * clavicle + 0.1 * spine).astype(np.float32)
