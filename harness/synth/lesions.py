"""Finding drawers: each finding changes the density map where the world put it.

A drawer gets the view geometry, the finding and the mutable layers (density D,
and ``keep``, the fraction of lung markings still visible) and returns the
masks whose bounding boxes are the ground truth. What each one draws is what a
radiologist looks for:

- effusion fills the base up to a meniscus that climbs the lateral wall, blunting
  the costophrenic angle and effacing the hemidiaphragm;
- pneumothorax: a lucent rim without lung markings beyond a thin pleural line;
- consolidation / pneumonia / opacity: irregular patches of increasing vagueness;
- edema: perihilar (bat-wing) haze that blurs the vessels;
- nodule, mass, calcified granuloma: round opacities of increasing size / density;
- atelectasis: a plate-like band (plus hemidiaphragm elevation, in ``adjust_anatomy``);
- fibrosis: peripheral basal reticulation (plus volume loss); emphysema:
  hyperlucent lungs with sparse markings, bullae and flat low diaphragms;
- hernia: a retrocardiac gas bubble with an air-fluid level; pleural thickening:
  a band along the chest wall or an apical cap; support devices: radio-opaque
  tubes, lines and a pacemaker; fracture: a break and step in a rib.

Cardiomegaly and an enlarged cardiomediastinum change the anatomy itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from harness.synth import findings as fx
from harness.synth.anatomy import Anatomy, Geometry, rib_curve, smooth_noise, step

Mask = tuple[tuple[slice, slice], np.ndarray]
FULL = (slice(None), slice(None))


@dataclass
class Layers:
    density: np.ndarray  # (H, W) float32
    keep: np.ndarray     # (H, W) lung-marking visibility


def adjust_anatomy(an: Anatomy, found: tuple[fx.Finding, ...]) -> Anatomy:
    """Findings that reshape the body: big heart, wide mediastinum, volume changes."""
    for f in found:
        s = f.severity
        if f.name == "cardiomegaly":
            an = replace(an, heart_ctr=max(an.heart_ctr, 0.53 + 0.14 * s))
        elif f.name == "enlarged_cardiomediastinum":
            an = replace(an, mediastinum_width=an.mediastinum_width * (1.35 + 0.45 * s))
        elif f.name == "emphysema":
            an = replace(an, diaphragm_y=an.diaphragm_y + 0.06 * s, dome=an.dome * (1 - 0.6 * s))
        elif f.name == "atelectasis" and f.zone == "lower":
            raise_ = 0.04 * s
            if f.side in ("right", "bilateral"):
                an = replace(an, right_raise=an.right_raise + raise_)
            if f.side in ("left", "bilateral"):
                an = replace(an, left_raise=an.left_raise + raise_)
        elif f.name == "fibrosis":
            an = replace(an, diaphragm_y=an.diaphragm_y - 0.04 * s)
    return an


def _sides(f: fx.Finding) -> tuple[str, ...]:
    return ("right", "left") if f.side == "bilateral" else (f.side or "right",)


def _sign(side: str) -> float:
    return -1.0 if side == "right" else 1.0


def _lateral_edge(g: Geometry, v: np.ndarray) -> np.ndarray:
    an = g.canvas.anatomy
    return an.thorax_width * (1 - 0.42 * np.exp(-np.maximum(v - an.apex_y, 0) / 0.22))


def effusion(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, an, out = g.canvas, g.canvas.anatomy, []
    s = f.severity
    if g.view == "lateral":  # posterior costophrenic sulcus fills first
        level = an.diaphragm_y + 0.04 - (0.06 + 0.35 * s)
        sl = cv.window(-0.2, level - 0.1, 0.7, an.diaphragm_y + 0.1)
        u, v = cv.u[sl], cv.v[sl]
        surface = level - 0.12 * np.clip((u - 0.1) / 0.5, 0, 1) ** 2
        fluid = step((v - surface) / 0.03) * step((u + 0.15) / 0.05) * step((0.6 - u) / 0.015) \
            * step((an.diaphragm_y + 0.06 - v) / 0.015)
        _blend(layers, sl, fluid * (0.7 + 0.3 * s), 0.6)
        return [(sl, fluid)]
    for side in _sides(f):
        sign, cp = _sign(side), g.costophrenic(side)
        h = 0.05 + 0.42 * s
        tw = an.thorax_width
        sl = cv.window(min(sign * 0.03, sign * (tw + 0.04)), cp - h - 0.16,
                       max(sign * 0.03, sign * (tw + 0.04)), cp + 0.06)
        u, v = cv.u[sl], cv.v[sl]
        a = np.abs(u)
        surface = cp - h - 0.22 * np.clip((a - 0.1) / (tw - 0.1), 0, 1) ** 3  # meniscus
        fluid = step((v - surface) / 0.03) * np.clip(0.55 + (v - surface) / 0.15, 0, 1) \
            * step((_lateral_edge(g, v) + 0.02 - a) / 0.012) \
            * step((a - 0.05) / 0.012) * step((cp + 0.04 - v) / 0.015) * (sign * u > 0)
        _blend(layers, sl, fluid * (0.7 + 0.3 * s), 0.6)
        layers.keep[sl] *= 1 - fluid
        out.append((sl, fluid))
    return out


def _blend(layers: Layers, sl: tuple[slice, slice], weight: np.ndarray, target: float) -> None:
    """Raise density towards ``target`` (never lowers it: fluid over bone stays bright)."""
    d = layers.density[sl]
    layers.density[sl] = d + np.maximum(0.0, target - d) * weight


def pneumothorax(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    if g.view == "lateral":
        return []
    cv, an, out = g.canvas, g.canvas.anatomy, []
    w = 0.05 + 0.2 * f.severity
    for side in _sides(f):
        sign, cp = _sign(side), g.costophrenic(side)
        lo = cp - 0.3
        sl = cv.window(min(sign * 0.1, sign * (an.thorax_width + 0.03)), an.apex_y - 0.05,
                       max(sign * 0.1, sign * (an.thorax_width + 0.03)), lo + 0.1)
        u, v = cv.u[sl], cv.v[sl]
        a = np.abs(u)
        wall = np.minimum(_lateral_edge(g, v) - a, v - an.apex_y - 0.9 * (a - 0.32) ** 2)
        upper = step((lo - v) / 0.05) * (sign * u > 0) * g.lung[sl]
        ptx = step((w - wall) / 0.008) * upper
        layers.keep[sl] *= 1 - ptx
        layers.density[sl] -= 0.05 * ptx
        layers.density[sl] += 0.08 * np.exp(-((wall - w) / 0.006) ** 2) * upper  # visceral pleural line
        out.append((sl, ptx))
    return out


_PATCH = {  # radius base, radius per severity, density, roughness, edge softness
    "consolidation": (0.07, 0.10, 0.22, 0.35, 0.12),
    "pneumonia": (0.07, 0.11, 0.17, 0.6, 0.18),
    "lung_opacity": (0.09, 0.12, 0.11, 0.5, 0.3),
}


def patch(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    r0, rs, dens, rough, edge = _PATCH[f.name]
    cv, out = g.canvas, []
    for k, side in enumerate(_sides(f) if g.view == "frontal" else ("",)):
        uc, vc = g.place(side, min(0.9, f.x + 0.1 * k), f.y)
        r = r0 + rs * f.severity
        sl = cv.window(uc - 1.5 * r, vc - 1.5 * r, uc + 1.5 * r, vc + 1.5 * r)
        u, v = cv.u[sl], cv.v[sl]
        d2 = ((u - uc) ** 2 + (v - vc) ** 2) / (r * r)
        mask = step((1 - d2 + rough * smooth_noise(rng, u.shape, 4)) / edge) * g.lung[sl]
        layers.density[sl] += (dens + 0.1 * f.severity) * mask
        layers.keep[sl] *= 1 - 0.5 * mask
        out.append((sl, mask))
    return out


def edema(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, an = g.canvas, g.canvas.anatomy
    if g.view == "lateral":
        haze = g.lung * np.exp(-(((cv.u - 0.05) / 0.35) ** 2 + ((cv.v + 0.05) / 0.4) ** 2))
        masks = [(FULL, haze)]
    else:
        haze = g.lung * np.exp(-(((np.abs(cv.u) - 0.18) / 0.3) ** 2
                                 + ((cv.v - an.heart_y + 0.3) / 0.42) ** 2))
        masks = [(FULL, haze * (cv.u < 0)), (FULL, haze * (cv.u > 0))]
    layers.density += (0.06 + 0.14 * f.severity) * haze
    layers.keep *= 1 - 0.5 * haze
    return masks


def round_opacity(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv = g.canvas
    uc, vc = g.place(f.side, f.x, f.y)
    r, dens, rough = {
        "nodule": (0.02 + 0.025 * f.severity, 0.2, 0.0),
        "mass": (0.06 + 0.08 * f.severity, 0.26, 0.25),
        "granuloma": (0.011 + 0.008 * f.severity, 0.45, 0.0),
    }[f.name]
    sl = cv.window(uc - 1.4 * r, vc - 1.4 * r, uc + 1.4 * r, vc + 1.4 * r)
    u, v = cv.u[sl], cv.v[sl]
    dist = np.sqrt((u - uc) ** 2 + (v - vc) ** 2) / r
    if rough:
        dist = dist - rough * 0.3 * smooth_noise(rng, u.shape, 3)
    mask = step((1 - dist) / 0.12)
    layers.density[sl] += dens * mask
    return [(sl, mask)]


def atelectasis(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, out = g.canvas, []
    for side in _sides(f) if g.view == "frontal" else ("",):
        uc, vc = g.place(side, f.x, f.y)
        theta = (-1 if side == "right" else 1) * float(rng.uniform(-0.15, 0.35))
        half, thick = 0.08 + 0.08 * f.severity, 0.015 + 0.025 * f.severity
        sl = cv.window(uc - half - 0.03, vc - half - 0.03, uc + half + 0.03, vc + half + 0.03)
        du, dv = cv.u[sl] - uc, cv.v[sl] - vc
        along = du * np.cos(theta) + dv * np.sin(theta)
        across = -du * np.sin(theta) + dv * np.cos(theta)
        mask = step((half - np.abs(along)) / 0.02) * step((thick - np.abs(across)) / 0.006) * g.lung[sl]
        layers.density[sl] += 0.2 * mask
        out.append((sl, mask))
    return out


def fibrosis(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, an, out = g.canvas, g.canvas.anatomy, []
    mid = an.apex_y + 0.5 * (an.diaphragm_y - an.apex_y)
    for side in _sides(f) if g.view == "frontal" else ("",):
        if g.view == "frontal":
            sign = _sign(side)
            sl = cv.window(min(0, sign * (an.thorax_width + 0.02)), mid - 0.1,
                           max(0, sign * (an.thorax_width + 0.02)), an.diaphragm_y + 0.05)
            u, v = cv.u[sl], cv.v[sl]
            where = (sign * u > 0) * step((np.abs(u) - 0.45 * _lateral_edge(g, v)) / 0.05)
        else:
            sl = cv.window(-0.6, mid - 0.1, 0.6, an.diaphragm_y + 0.05)
            u, v = cv.u[sl], cv.v[sl]
            where = step((u + 0.1) / 0.05)
        weight = g.lung[sl] * where * step((v - mid) / 0.08)
        reticulation = np.exp(-(smooth_noise(rng, u.shape, 16) / 0.3) ** 2)
        layers.density[sl] += (0.07 + 0.1 * f.severity) * reticulation * weight
        out.append((sl, weight))
    return out


def emphysema(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, s = g.canvas, f.severity
    layers.density -= 0.05 * s * g.lung
    layers.keep *= 1 - 0.45 * s
    for k in range(1 + int(s > 0.5)):  # bullae: lucent, thin-walled
        side = ("right", "left")[k] if g.view == "frontal" else ""
        uc, vc = g.place(side, 0.5 + 0.2 * float(rng.random()), 0.18)
        r = 0.05 + 0.03 * s
        sl = cv.window(uc - 1.3 * r, vc - 1.3 * r, uc + 1.3 * r, vc + 1.3 * r)
        dist = np.sqrt((cv.u[sl] - uc) ** 2 + (cv.v[sl] - vc) ** 2) / r
        lung = g.lung[sl]
        layers.density[sl] += lung * (0.05 * np.exp(-((dist - 1) / 0.08) ** 2) - 0.06 * step((1 - dist) / 0.1))
        layers.keep[sl] *= 1 - step((1 - dist) / 0.1)
    if g.view == "lateral":
        return [(FULL, g.lung)]
    return [(FULL, g.lung * (cv.u < 0)), (FULL, g.lung * (cv.u > 0))]


def pleural_thickening(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    if g.view == "lateral":
        return []
    cv, an, out = g.canvas, g.canvas.anatomy, []
    t = 0.015 + 0.03 * f.severity
    for side in _sides(f):
        sign = _sign(side)
        v_lo, v_hi = {"upper": (an.apex_y - 0.05, an.apex_y + 0.35), "mid": (-0.3, 0.15)}.get(
            f.zone, (0.05, g.costophrenic(side)))
        sl = cv.window(min(sign * 0.1, sign * (an.thorax_width + 0.03)), v_lo,
                       max(sign * 0.1, sign * (an.thorax_width + 0.03)), v_hi)
        u, v = cv.u[sl], cv.v[sl]
        a = np.abs(u)
        wall = np.minimum(_lateral_edge(g, v) - a, v - an.apex_y - 0.9 * (a - 0.32) ** 2)
        mask = step((t - np.abs(wall - t / 2)) / 0.006) * (sign * u > 0) \
            * step((v - v_lo) / 0.02) * step((v_hi - v) / 0.02)
        layers.density[sl] += 0.16 * mask
        out.append((sl, mask))
    return out


def hernia(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    cv, an = g.canvas, g.canvas.anatomy
    if g.view == "lateral":
        uc, vc = 0.25, an.diaphragm_y - 0.12
    else:
        uc, vc = 0.04, an.diaphragm_y - an.dome - 0.03
    r = 0.06 + 0.05 * f.severity
    sl = cv.window(uc - 1.3 * r, vc - 1.3 * r, uc + 1.3 * r, vc + 1.3 * r)
    u, v = cv.u[sl], cv.v[sl]
    dist = np.sqrt((u - uc) ** 2 + (v - vc) ** 2) / r
    inside = step((1 - dist) / 0.06)
    gas = inside * step((vc + 0.15 * r - v) / 0.01)  # air above the fluid level
    layers.density[sl] += 0.05 * np.exp(-((dist - 1) / 0.07) ** 2) - 0.24 * gas + 0.04 * (inside - gas)
    return [(sl, inside)]


def _polyline(g: Geometry, points: list[tuple[float, float]], width: float) -> Mask:
    cv = g.canvas
    us, vs = [p[0] for p in points], [p[1] for p in points]
    sl = cv.window(min(us) - width - 0.02, min(vs) - width - 0.02, max(us) + width + 0.02, max(vs) + width + 0.02)
    u, v = cv.u[sl], cv.v[sl]
    dist = np.full(u.shape, np.inf, dtype=np.float32)
    for (u0, v0), (u1, v1) in zip(points[:-1], points[1:], strict=True):
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((u - u0) * du + (v - v0) * dv) / max(du * du + dv * dv, 1e-9), 0, 1)
        dist = np.minimum(dist, np.sqrt((u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2))
    return sl, step((width - dist) / 0.004)


def _device_paths(g: Geometry, kind: int) -> list[tuple[list[tuple[float, float]], float]]:
    an = g.canvas.anatomy
    dy, hy = an.diaphragm_y, an.heart_y
    if g.view == "lateral":
        return {
            fx.DEVICE_ET_TUBE: [([(-0.1, -1.4), (-0.02, -0.8), (0.03, -0.45)], 0.012)],
            fx.DEVICE_NG_TUBE: [([(-0.08, -1.4), (0.12, -0.6), (0.2, 0.1), (0.0, dy + 0.15)], 0.008)],
            fx.DEVICE_CENTRAL_LINE: [([(0.0, -1.3), (-0.05, -0.7), (-0.1, -0.25)], 0.006)],
            fx.DEVICE_PACEMAKER: [([(-0.6, -0.6), (-0.45, -0.6)], 0.05),
                                  ([(-0.5, -0.6), (-0.2, -0.3), (-0.3, hy)], 0.006)],
            fx.DEVICE_CHEST_TUBE: [([(0.45, dy - 0.05), (0.25, -0.2), (0.1, an.apex_y + 0.15)], 0.012)],
        }[kind]
    tw = an.thorax_width
    return {
        fx.DEVICE_ET_TUBE: [([(0.0, -1.4), (0.004, -0.7), (0.008, -0.42)], 0.013)],
        fx.DEVICE_NG_TUBE: [([(0.01, -1.4), (0.03, -0.4), (0.06, hy + 0.1), (0.3, dy + 0.15)], 0.008)],
        fx.DEVICE_CENTRAL_LINE: [([(-0.3, -1.3), (-0.14, -0.8), (-0.07, -0.45), (-0.05, -0.18)], 0.007)],
        fx.DEVICE_PACEMAKER: [([(0.38, -0.62), (0.52, -0.62)], 0.055),
                              ([(0.42, -0.62), (0.0, -0.55), (-0.06, -0.1), (0.1, hy + 0.12)], 0.006)],
        fx.DEVICE_CHEST_TUBE: [([(0.92 * tw, dy - 0.05), (0.7 * tw, -0.1), (0.45, an.apex_y + 0.15)], 0.012)],
    }[kind]


def support_devices(g: Geometry, f: fx.Finding, layers: Layers, rng: np.random.Generator) -> list[Mask]:
    out = []
    for kind in sorted(fx.DEVICE_NAMES):
        if not f.variant & kind:
            continue
        masks = [_polyline(g, pts, w) for pts, w in _device_paths(g, kind)]
        for sl, m in masks:
            d = layers.density[sl]
            layers.density[sl] = np.maximum(d, 0.95 * m + d * (1 - m))
        out.append(masks[0])  # one box per device (pacemaker: the generator)
    return out


def fracture_phase(g: Geometry, f: fx.Finding, phase: np.ndarray) -> list[Mask]:
    """A break with a step-off in posterior rib ``variant`` (modifies the rib phase in place)."""
    if g.view == "lateral":
        return []
    cv, an = g.canvas, g.canvas.anatomy
    sign = _sign(f.side or "right")
    a_f = 0.2 + f.x * (an.thorax_width - 0.3)
    v_f = an.apex_y + (an.rib_phase + f.variant + 0.5) * an.rib_spacing + rib_curve(a_f)
    sl = cv.window(sign * a_f - 0.07, v_f - 0.07, sign * a_f + 0.07, v_f + 0.07)
    a = np.abs(cv.u[sl])
    ph = phase[sl]
    this_rib = (np.floor(ph) == f.variant) & (np.sign(cv.u[sl]) == sign)
    gap = this_rib & (np.abs(a - a_f) < 0.008 + 0.006 * f.severity)
    shifted = this_rib & (a > a_f) & (np.abs(a - a_f) < 0.06)
    ph[shifted] += 0.1 + 0.1 * f.severity
    ph[gap] = np.floor(ph[gap])
    return [(sl, (np.abs(a - a_f) < 0.035) & (np.abs(cv.v[sl] - v_f) < 0.045))]


LUNG_STAGE: dict[str, Callable[..., list[Mask]]] = {
    "pleural_effusion": effusion, "pneumothorax": pneumothorax, "consolidation": patch,
    "pneumonia": patch, "lung_opacity": patch, "edema": edema, "nodule": round_opacity,
    "mass": round_opacity, "granuloma": round_opacity, "atelectasis": atelectasis,
    "fibrosis": fibrosis, "emphysema": emphysema, "pleural_thickening": pleural_thickening,
}
OVERLAY_STAGE: dict[str, Callable[..., list[Mask]]] = {"hernia": hernia, "support_devices": support_devices}
