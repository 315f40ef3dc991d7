"""Image-quality metrics of one image, MRIQC-style, over the image's own masks.

Background is air as acquired: outside the anatomy mask (dilated by two voxels), never a
defaced region or zero padding. Where the background is not noisy air (a brain extract, a
fitted map), metrics that need the noise (SNR, FBER, QI1, ghosting) are null; where tissue
classes cannot be estimated (FA and MD maps, or a brain without three distinct classes), CNR
and CJV are null. No metric is ever made up.

- ``iqm_snr``: mean brain (else anatomy) intensity over the noise sigma, the latter from the
  background's median under a Rayleigh law (median = sigma * sqrt(2 ln 2)): robust to ghosts.
- ``iqm_cnr``, ``iqm_cjv``: grey and white matter from a three-class k-means of the brain's
  intensities (grey matter is the middle class in every structural contrast; white matter the
  larger of the two others). CNR = |mu_WM - mu_GM| / sqrt(s_WM^2 + s_GM^2 + s_noise^2) and
  CJV = (s_WM + s_GM) / |mu_WM - mu_GM| (Ganzetti et al. 2016).
- ``iqm_efc``: entropy focus criterion (Atkinson et al. 1997), normalised to its maximum.
- ``iqm_fber``: mean squared anatomy intensity over mean squared background intensity.
- ``iqm_qi1``: share of background voxels above the Rayleigh law's 99th percentile, less the 1%
  the law itself puts there (Mortamet et al. 2009's QI1 in spirit).
- ``iqm_inu``: the bias field, estimated by normalised Gaussian smoothing (15 mm) of the brain
  (else the anatomy): its 5-95th percentile spread over its median.
- ``iqm_ghost``: mean background intensity in the band where a half-field-of-view (N/2) ghost of
  the head falls, above the rest of the background, over the mean anatomy intensity; the
  largest over the axes.
- ``iqm_fwhm``: smoothness inside the anatomy mask, from the variance of neighbour differences
  against the variance of the voxels, as for a Gaussian random field (Forman et al. 1995, the
  estimator of AFNI's 3dFWHMx that MRIQC reports as fwhm_avg); the mean over the axes in mm.
  Blur raises it; noise lowers it (the noise has its own metrics).

Every metric is computed on a sampling grid of about 5 mm (every fifth voxel of a 1 mm image,
every second of a 2.4 mm one), the smoothness from voxel pairs about 2 mm apart taken at that
grid's points: means, medians, percentiles and variances of millions of voxels do not need all
of them (sampling keeps each voxel's value; it does not blur), and the metrics then cost less
than reading the image from disk. The grid is fixed by the voxel size alone, so the same image
always gets the same figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.masks.anatomy import zero_padding

__all__ = ["NO_TISSUE_CLASSES", "image_quality_metrics"]

#: Modalities without grey/white matter contrast to classify.
NO_TISSUE_CLASSES = frozenset({"FA", "MD"})
#: Fewest background voxels the noise is learnt from.
MIN_BACKGROUND = 1000
SAMPLE_MM = 5.0  # spacing of the sampling grid the metrics are computed on
LAG_MM = 2.0  # distance of the voxel pairs the smoothness is measured from
NEAR_MM = 4.0  # background starts this far from the anatomy
INU_SIGMA_MM = 15.0
INU_GRID_MM = 8.0  # the bias field is smooth: estimated on a coarser grid still
RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))
RAYLEIGH_P99 = float(np.sqrt(-2 * np.log(0.01)))


def image_quality_metrics(
    data: NDArray[Any],
    anatomy: NDArray[np.bool_],
    anon: NDArray[np.bool_],
    brain: NDArray[np.bool_] | None,
    *,
    modality: str,
    spacing: tuple[float, ...],
) -> dict[str, float | None]:
    """The ``iqm_*`` columns of one 3D image (see the module's docstring)."""
    steps = tuple(max(1, round(SAMPLE_MM / float(s))) for s in spacing[:3])
    lags = tuple(max(1, round(LAG_MM / float(s))) for s in spacing[:3])
    fwhm = _fwhm(data, anatomy, spacing, steps, lags)
    grid = tuple(slice(None, None, step) for step in steps)
    spacing = tuple(float(s) * step for s, step in zip(spacing[:3], steps, strict=True))
    volume = np.asarray(data[grid], dtype=np.float32)
    anatomy, anon = np.ascontiguousarray(anatomy[grid]), anon[grid]
    brain = None if brain is None else np.ascontiguousarray(brain[grid])
    padding = zero_padding(volume)
    excluded = anon | padding
    reach = [max(1, round(NEAR_MM / s)) for s in spacing]
    near = ndimage.maximum_filter(anatomy.view(np.uint8), size=[2 * r + 1 for r in reach])
    background = ~near.view(bool) & ~excluded
    sigma = _noise_sigma(volume, background)
    tissue = brain if brain is not None and brain.any() else anatomy
    signal = float(volume[tissue].mean()) if tissue.any() else 0.0
    head = float(volume[anatomy].mean()) if anatomy.any() else 0.0

    classes = None
    if modality not in NO_TISSUE_CLASSES and brain is not None and brain.sum() > 1000:
        classes = _grey_white(volume[brain])
    out: dict[str, float | None] = {
        "iqm_snr": signal / sigma if sigma else None,
        "iqm_cnr": None,
        "iqm_cjv": None,
        "iqm_efc": _efc(volume[~excluded]),
        "iqm_fber": None,
        "iqm_qi1": None,
        "iqm_inu": _inu(volume, anatomy, brain, spacing),
        "iqm_ghost": None,
        "iqm_fwhm": fwhm,
    }
    if classes is not None:
        (mu_gm, sd_gm), (mu_wm, sd_wm) = classes
        contrast = abs(mu_wm - mu_gm)
        if contrast > 0:
            noise = sigma or 0.0
            out["iqm_cnr"] = contrast / float(np.sqrt(sd_gm**2 + sd_wm**2 + noise**2))
            out["iqm_cjv"] = (sd_gm + sd_wm) / contrast
    if sigma:
        energy = float(np.mean(volume[background].astype(np.float64) ** 2))
        if energy > 0:
            out["iqm_fber"] = float(np.mean(volume[anatomy].astype(np.float64) ** 2)) / energy
        above = float(np.mean(volume[background] > RAYLEIGH_P99 * sigma))
        out["iqm_qi1"] = max(above - 0.01, 0.0)
        if head > 0:
            out["iqm_ghost"] = _ghost(volume, anatomy, background) / head
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in out.items()}


def _noise_sigma(volume: NDArray[np.float32], background: NDArray[np.bool_]) -> float | None:
    """Rayleigh sigma of the air, or None when there is no noisy air to learn it from."""
    values = volume[background]
    if values.size < MIN_BACKGROUND:
        return None
    if float(np.mean(values == 0)) > 0.5:  # masked by the uploader: no noise left
        return None
    median = float(np.median(values))
    return median / RAYLEIGH_MEDIAN if median > 0 else None


def _grey_white(
    values: NDArray[np.float32],
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """(mean, sd) of grey and of white matter from a 1D three-class k-means; None when the
    classes are not distinct enough (each at least 5% of the brain).

    The k-means runs on a 256-bin histogram of the brain's intensities (weighted bin centres),
    which gives the same class boundaries as on the voxels at a thousandth of the cost; the
    classes' means and spreads are then taken from the voxels between those boundaries."""
    low_edge, high_edge = np.percentile(values, [0.5, 99.5])
    if not high_edge > low_edge:
        return None
    counts, edges = np.histogram(values, bins=256, range=(float(low_edge), float(high_edge)))
    centres_of_bins = 0.5 * (edges[:-1] + edges[1:])
    weights = counts.astype(np.float64)
    centres = np.percentile(values, [10, 50, 90]).astype(np.float64)
    for _ in range(50):
        labels = np.argmin(np.abs(centres_of_bins[:, None] - centres[None, :]), axis=1)
        mass = np.bincount(labels, weights=weights, minlength=3)
        sums = np.bincount(labels, weights=weights * centres_of_bins, minlength=3)
        moved = np.where(mass > 0, sums / np.maximum(mass, 1e-12), centres)
        if np.allclose(moved, centres):
            break
        centres = moved
    centres = np.sort(centres)
    bounds = 0.5 * (centres[:-1] + centres[1:])
    labels = np.searchsorted(bounds, values)
    counts3 = np.bincount(labels, minlength=3)
    if counts3.min() < 0.05 * values.size:
        return None
    stats = [
        (float(values[labels == k].mean()), float(values[labels == k].std())) for k in range(3)
    ]
    # Grey matter is the middle class in every structural contrast; white matter the larger
    # of the other two.
    white = 0 if counts3[0] > counts3[2] else 2
    return stats[1], stats[white]


def _efc(values: NDArray[np.float32]) -> float | None:
    x = np.abs(values.astype(np.float64))
    n = x.size
    total = float(np.sqrt(np.sum(x * x)))
    if n < 2 or total == 0:
        return None
    p = x[x > 0] / total
    entropy = float(-np.sum(p * np.log(p)))
    return entropy / float(np.sqrt(n) * np.log(np.sqrt(n)))


def _inu(
    volume: NDArray[np.float32],
    anatomy: NDArray[np.bool_],
    brain: NDArray[np.bool_] | None,
    spacing: tuple[float, ...],
) -> float | None:
    # The brain as a whole (an intensity-selected class would leave out the voxels the field
    # pushes furthest): at 15 mm its grey/white mixture is even enough.
    region = brain if brain is not None and brain.sum() > 1000 else anatomy
    if region.sum() < 100:
        return None
    # On a coarse grid: the field is smooth, and this is eight to sixty-four times cheaper.
    steps = tuple(max(1, round(INU_GRID_MM / s)) for s in spacing[:3])
    coarse = tuple(slice(None, None, step) for step in steps)
    small, mask = volume[coarse] * region[coarse], region[coarse].astype(np.float32)
    sigma = [INU_SIGMA_MM / (s * step) for s, step in zip(spacing[:3], steps, strict=True)]
    field = ndimage.gaussian_filter(small, sigma) / np.maximum(
        ndimage.gaussian_filter(mask, sigma), 1e-6
    )
    inside = field[mask > 0]
    median = float(np.median(inside))
    if median <= 0:
        return None
    low, high = np.percentile(inside, [5, 95])
    return float((high - low) / median)


def _ghost(
    volume: NDArray[np.float32], anatomy: NDArray[np.bool_], background: NDArray[np.bool_]
) -> float:
    worst = 0.0
    for axis in range(3):
        band = np.roll(anatomy, anatomy.shape[axis] // 2, axis=axis) & background
        others = background & ~band
        if band.sum() < 100 or others.sum() < 100:
            continue
        worst = max(worst, float(volume[band].mean()) - float(volume[others].mean()))
    return max(worst, 0.0)


def _fwhm(
    data: NDArray[Any],
    region: NDArray[np.bool_],
    spacing: tuple[float, ...],
    steps: tuple[int, ...],
    lags: tuple[int, ...],
) -> float | None:
    """Smoothness from voxel pairs ``lags`` apart along each axis, taken at the points of the
    sampling grid (``steps``): the pairs are a sample, their distance is the lag's."""
    grid = tuple(slice(None, None, step) for step in steps)
    inside = region[grid]
    if inside.sum() < 1000:
        return None
    variance = float(np.asarray(data[grid][inside], dtype=np.float64).var())
    if variance <= 0:
        return None
    widths = []
    for axis in range(3):
        n, step, lag = region.shape[axis], steps[axis], lags[axis]
        here, there = list(grid), list(grid)
        here[axis], there[axis] = slice(0, n - lag, step), slice(lag, n, step)
        both = region[tuple(here)] & region[tuple(there)]
        pairs = np.asarray(data[tuple(there)][both], dtype=np.float64)
        pairs -= np.asarray(data[tuple(here)][both], dtype=np.float64)
        ratio = 1.0 - float(pairs.var()) / (2.0 * variance)
        if not 0.0 < ratio < 1.0:
            return None  # rougher than white noise, or constant: no Gaussian width fits
        width = spacing[axis] * lag * float(np.sqrt(-2.0 * np.log(2.0) / np.log(ratio)))
        widths.append(width)
    return float(np.mean(widths))
