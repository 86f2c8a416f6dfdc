"""Image metrics: PSNR and SSIM of 2-D grey images, over the whole image or a masked region.

``(H, W)`` inputs give a float, a leading batch axis ``(B, H, W)`` one value per image.
``psnr`` and ``ssim`` equal scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity`` (checked in ``tests/test_metrics.py``); ``ssim_masked`` averages
the same SSIM map over a region (masked-region regeneration).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage


def _image_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"images must share an (H, W) or (B, H, W) shape, got {x.shape} and {y.shape}")
    return x, y


def psnr(image_true: np.ndarray, image_test: np.ndarray, data_range: float) -> Any:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    ``(H, W)`` -> float (= ``skimage.metrics.peak_signal_noise_ratio``);
    ``(B, H, W)`` -> ``(B,)`` one value per image. Identical images give ``inf``.
    """
    x, y = _image_pair(image_true, image_test)
    mse = ((x - y) ** 2).mean(axis=(-2, -1))
    with np.errstate(divide="ignore"):
        out = 10 * np.log10(data_range**2 / mse)
    return float(out) if x.ndim == 2 else out


def _resolved_win(win_size: int | None, gaussian_weights: bool, sigma: float) -> int:
    """The window side: ``win_size``, or scikit-image's default for the window kind when it is None."""
    return win_size if win_size is not None else (2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7)


def ssim_map(image_true: np.ndarray, image_test: np.ndarray, data_range: float, *, win_size: int | None = 7,
             gaussian_weights: bool = False, sigma: float = 1.5, use_sample_covariance: bool = True,
             k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """The local SSIM map, same shape as the input (= ``structural_similarity(..., full=True)[1]``).

    Windows at the border see reflect-padded pixels, as in scikit-image; ``ssim``
    crops that border before averaging. Arguments as in ``ssim``.
    """
    x, y = _image_pair(image_true, image_test)
    win_size = _resolved_win(win_size, gaussian_weights, sigma)
    if win_size % 2 == 0 or win_size > min(x.shape[-2:]):
        raise ValueError(f"win_size must be odd and <= the image side, got {win_size}")
    if gaussian_weights:
        sig = (sigma, sigma) if x.ndim == 2 else (0.0, sigma, sigma)
        filt = functools.partial(ndimage.gaussian_filter, sigma=sig, truncate=3.5)
    else:
        filt = functools.partial(ndimage.uniform_filter,
                                 size=(win_size, win_size) if x.ndim == 2 else (1, win_size, win_size))
    n_points = win_size**2
    cov_norm = n_points / (n_points - 1) if use_sample_covariance else 1.0
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def ssim(image_true: np.ndarray, image_test: np.ndarray, data_range: float, *, win_size: int | None = 7,
         gaussian_weights: bool = False, sigma: float = 1.5, use_sample_covariance: bool = True,
         k1: float = 0.01, k2: float = 0.03) -> Any:
    """Mean structural similarity (Wang et al. 2004), as ``skimage.metrics.structural_similarity``.

    Same defaults as scikit-image (7x7 uniform window, sample covariance,
    reflect padding, border of ``(win_size - 1) // 2`` cropped before the mean).
    With ``gaussian_weights=True`` pass ``win_size=None`` to get scikit-image's
    11x11 window for ``sigma = 1.5``, and usually ``use_sample_covariance=False``
    (the paper's setting). ``(B, H, W)`` -> ``(B,)``.
    """
    s = ssim_map(image_true, image_test, data_range, win_size=win_size, gaussian_weights=gaussian_weights,
                 sigma=sigma, use_sample_covariance=use_sample_covariance, k1=k1, k2=k2)
    pad = (_resolved_win(win_size, gaussian_weights, sigma) - 1) // 2
    s = s[..., pad:s.shape[-2] - pad, pad:s.shape[-1] - pad]
    out = s.mean(axis=(-2, -1), dtype=np.float64)
    return float(out) if s.ndim == 2 else out


def ssim_masked(image_true: np.ndarray, image_test: np.ndarray, mask: np.ndarray, data_range: float, *,
                win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> Any:
    """Mean of the SSIM map over the pixels where ``mask`` is True (masked-region regeneration).

    The map is ``ssim``'s (7x7 uniform window, sample covariance, reflect padding), but it is
    averaged over ``mask`` instead of over the border-cropped image, so a mask equal to that
    interior gives exactly ``ssim``. ``(H, W)`` -> float, ``(B, H, W)`` -> ``(B,)``; an empty mask
    is an error.
    """
    x, y = _image_pair(image_true, image_test)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape:
        raise ValueError(f"mask {mask.shape} must have the images' shape {x.shape}")
    s = ssim_map(x, y, data_range, win_size=win_size, k1=k1, k2=k2)  # checks win_size
    counts = mask.sum(axis=(-2, -1))
    if np.any(counts == 0):
        raise ValueError("an empty mask has no SSIM")
    out = np.where(mask, s, 0.0).sum(axis=(-2, -1)) / counts
    return float(out) if x.ndim == 2 else out
