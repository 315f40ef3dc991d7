"""Image-quality metrics of one image, by MRIQC's definitions, over the image's own masks.

Each ``iqm_*`` column is the MRIQC image-quality metric of the same meaning (Esteban et al.
2017; the formulas of ``mriqc.qc.anatomical``), computed from the toolkit's masks instead of
MRIQC's FSL/ANTs/AFNI pipeline. The masks play MRIQC's parts:

- *head*: the anatomy mask; *rotation mask* (voxels that are not part of the acquisition): the
  defaced region and zero padding;
- *air*: outside the head by more than 4 mm, rotation mask left out; *artifacts*: air voxels
  brighter than 10 robust SDs of the air (MRIQC's ``artifact_mask``: MAD of the non-zero air,
  not within the nearest tenth of the air's distance to the head, opened); the *hat* is the air
  with its artifacts;
- *tissues*: CSF, grey and white matter from a three-class k-means of the brain mask's
  intensities (grey matter is the middle class in every structural contrast; white matter the
  larger of the two others) where MRIQC uses FSL FAST's partial-volume maps; a tissue's
  statistics are taken over its *core*, the voxels whose six neighbours are of the same class
  (MRIQC's are weighted by the partial-volume maps, its MADs over voxels at least half that
  tissue): a class boundary's voxels are partial volume, and would double the CJV of a clean
  head (Colin27: 0.63 with them, 0.36 without; ABIDE's median 0.34). The WM share counts every
  voxel.

The columns and the MRIQC metric each one is (``MRIQC_NAMES``):

- ``iqm_snr`` (``snr_total``): the mean over the three tissues of median / (SD * sqrt(n/(n-1))).
- ``iqm_cnr`` (``cnr``): |median WM - median GM| / sqrt(SD_air^2 + SD_GM^2 + SD_WM^2).
- ``iqm_cjv`` (``cjv``): (MAD_WM + MAD_GM) / |median WM - median GM|, MADs scaled to SDs.
- ``iqm_efc`` (``efc``): the entropy focus criterion of every voxel out of the rotation mask.
- ``iqm_fber`` (``fber``): median of the head's squared intensities over the air's (here the
  air is everything out of the head and the rotation mask, as in MRIQC's ``fber``).
- ``iqm_qi1`` (``qi_1``): artifact voxels over hat voxels.
- ``iqm_fwhm`` (``fwhm_avg``): smoothness in voxels, averaged over the axes, from the
  variance of voxel differences (the estimator of AFNI's classic ``3dFWHMx``, Forman et al.
  1995), inside the head.
- ``iqm_wm2max`` (``wm2max``): median WM over the 99.95th percentile of the whole image.
- ``iqm_icvs_wm`` (``icvs_wm``): the white matter's share of the three tissues' voxels.
- ``iqm_inu`` (close to ``inu_range``): the 5-95th percentile spread of the bias field over its
  median, inside the brain (else the head). MRIQC reads the field N4 fitted; here it is
  estimated by normalised Gaussian smoothing (15 mm) of the brain, which also carries some of
  the anatomy's own contrast and reads about 80% of a smooth field's spread (the smoothing
  draws the field's ends towards the brain's inside).
- ``iqm_ghost`` (no MRIQC T1w/T2w metric): the mean air intensity in the band where a
  half-field-of-view (N/2) ghost of the head falls, above the rest of the air, over the mean
  head intensity; the largest over the axes.

Where MRIQC and this module differ on purpose: MRIQC measures the N4-corrected image, this
module the image as stored (N4 is not run in a build); MRIQC's hat leaves out the air below
the nasion-inion plane, found by registration, which is not run either; MRIQC's -1 sentinels
(no air for ``fber``, ``qi_1``) are nulls here. Where the air is not noisy air (a brain
extract, a fitted map, air zeroed by the uploader) the metrics that need its noise (FBER,
QI1) are null, ghosting too where the air is blank, and CNR takes an air SD of 0, as
MRIQC's would on such an image; where the tissues cannot be estimated (FA and MD maps, or a
brain without three distinct classes) SNR, CNR, CJV, WM2MAX and the WM share are null. No
metric is ever made up.

Every metric is computed on a sampling grid of about 5 mm (every fifth voxel of a 1 mm image,
every second of a 2.4 mm one; ``sample_mm=0`` takes every voxel): medians, percentiles and SDs
of millions of voxels do not need all of them (sampling keeps each voxel's value; it does not
blur), and the metrics then cost less than reading the image. EFC, a sum over every voxel, is
estimated from the grid's sums scaled by the sampling factor; the smoothness is measured from
voxel pairs one voxel apart taken at the grid's points. The grid is fixed by the voxel size
alone, so the same image always gets the same figures. The tests compare each metric with
MRIQC's own function over the same masks of a real head, and the sampled figures with the full
grid's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.masks.anatomy import zero_padding

__all__ = [
    "MRIQC_NAMES",
    "NO_TISSUE_CLASSES",
    "Regions",
    "Tissue",
    "image_quality_metrics",
    "regions",
]

#: Column -> the MRIQC metric it is (see the module's docstring); ``iqm_ghost`` has none.
MRIQC_NAMES: dict[str, str] = {
    "iqm_snr": "snr_total",
    "iqm_cnr": "cnr",
    "iqm_cjv": "cjv",
    "iqm_efc": "efc",
    "iqm_fber": "fber",
    "iqm_qi1": "qi_1",
    "iqm_inu": "inu_range",
    "iqm_fwhm": "fwhm_avg",
    "iqm_wm2max": "wm2max",
    "iqm_icvs_wm": "icvs_wm",
}
#: Modalities without grey/white matter contrast to classify.
NO_TISSUE_CLASSES = frozenset({"FA", "MD"})
#: Fewest air voxels (on the sampling grid) the noise is learnt from.
MIN_BACKGROUND = 1000
SAMPLE_MM = 5.0  # spacing of the sampling grid the metrics are computed on
NEAR_MM = 4.0  # the air starts this far from the head
ARTIFACT_Z = 10.0  # MRIQC's artifact_mask zscore
ARTIFACT_NEAR = 0.10  # ... and the share of the air's largest distance kept clear of the head
INU_SIGMA_MM = 15.0
INU_GRID_MM = 8.0  # the bias field is smooth: estimated on a coarser grid still
MAD_TO_SD = 1.0 / 0.6744897501960817  # statsmodels' mad(): MAD / Phi^-1(3/4)


class Tissue(NamedTuple):
    """MRIQC's summary statistics of one tissue class (or of the air)."""

    median: float
    sd: float
    mad: float  # scaled to an SD
    n: int

    @classmethod
    def of(cls, values: NDArray[np.float32]) -> Tissue:
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) * MAD_TO_SD
        return cls(median, float(values.std(dtype=np.float64)), mad, int(values.size))


@dataclass(frozen=True)
class Regions:
    """The parts of one image the metrics are computed over, on a sampling grid."""

    volume: NDArray[np.float32]
    head: NDArray[np.bool_]
    rotation: NDArray[np.bool_]  # defaced region and zero padding: not part of the acquisition
    hat: NDArray[np.bool_]  # the air more than NEAR_MM from the head, rotation left out
    artifacts: NDArray[np.bool_]  # the hat's artifact voxels
    #: FSL FAST's labels: 0 outside the brain (or no tissue classes), 1 CSF, 2 GM, 3 WM ...
    tissues: NDArray[np.uint8] | None
    #: ... and the same where the voxel's six neighbours (at the image's resolution) share it.
    cores: NDArray[np.uint8] | None
    brain: NDArray[np.bool_] | None
    spacing: tuple[float, float, float]  # of the grid, mm
    factor: float  # voxels of the image per voxel of the grid

    @property
    def noisy(self) -> bool:
        """Whether the air holds noise to measure (not air zeroed by the uploader)."""
        return bool(
            self.hat.sum() >= MIN_BACKGROUND and float(np.mean(self.volume[self.hat] == 0)) <= 0.5
        )


def regions(
    data: NDArray[Any],
    anatomy: NDArray[np.bool_],
    anon: NDArray[np.bool_],
    brain: NDArray[np.bool_] | None,
    *,
    modality: str,
    spacing: tuple[float, ...],
    sample_mm: float = SAMPLE_MM,
) -> Regions:
    """The :class:`Regions` of one image on a grid of about ``sample_mm`` (0: every voxel)."""
    steps = _steps(spacing, sample_mm)
    grid = tuple(slice(None, None, step) for step in steps)
    volume = np.asarray(data[grid], dtype=np.float32)
    factor = float(np.prod(data.shape[:3])) / float(volume.size)
    sx, sy, sz = (float(s) * step for s, step in zip(spacing[:3], steps, strict=True))
    head = np.ascontiguousarray(anatomy[grid])
    rotation = anon[grid] | zero_padding(volume)
    hat, artifacts = _air(volume, head, rotation, (sx, sy, sz))
    inside = None if brain is None else np.ascontiguousarray(brain[grid])
    tissues = cores = None
    if modality not in NO_TISSUE_CLASSES and inside is not None and inside.sum() > 1000:
        classes = _tissue_classes(volume[inside])
        if classes is not None:
            tissues = np.zeros(volume.shape, dtype=np.uint8)
            tissues[inside] = classes(volume[inside])
            assert brain is not None
            cores = _cores(data, brain, steps, tissues, classes)
    return Regions(
        volume, head, rotation, hat, artifacts, tissues, cores, inside, (sx, sy, sz), factor
    )


def image_quality_metrics(
    data: NDArray[Any],
    anatomy: NDArray[np.bool_],
    anon: NDArray[np.bool_],
    brain: NDArray[np.bool_] | None,
    *,
    modality: str,
    spacing: tuple[float, ...],
    sample_mm: float = SAMPLE_MM,
) -> dict[str, float | None]:
    """The ``iqm_*`` columns of one 3D image (see the module's docstring); ``sample_mm`` 0
    measures every voxel."""
    r = regions(data, anatomy, anon, brain, modality=modality, spacing=spacing, sample_mm=sample_mm)
    volume, head = r.volume, r.head
    out: dict[str, float | None] = dict.fromkeys(MRIQC_NAMES, None) | {"iqm_ghost": None}
    out["iqm_efc"] = _efc(volume[~r.rotation], r.factor)
    out["iqm_inu"] = _inu(volume, head, r.brain, r.spacing)
    out["iqm_fwhm"] = _fwhm(data, anatomy, _steps(spacing, sample_mm))
    air = r.hat & ~r.artifacts
    if r.tissues is not None and r.cores is not None:
        sizes = np.bincount(r.tissues[r.tissues > 0], minlength=4)
        out["iqm_icvs_wm"] = float(sizes[3]) / float(sizes[1:].sum())
    if r.cores is not None and min(int((r.cores == k).sum()) for k in (1, 2, 3)) >= 10:
        csf, gm, wm = (Tissue.of(volume[r.cores == k]) for k in (1, 2, 3))
        out["iqm_snr"] = float(np.mean([_snr(t) for t in (csf, gm, wm)]))
        top = float(np.percentile(volume, 99.95))
        if top > 0:
            out["iqm_wm2max"] = wm.median / top
        contrast = abs(wm.median - gm.median)
        if contrast > 0:
            air_sd = Tissue.of(volume[air]).sd if r.noisy else 0.0
            out["iqm_cnr"] = contrast / float(np.sqrt(air_sd**2 + gm.sd**2 + wm.sd**2))
            out["iqm_cjv"] = (wm.mad + gm.mad) / contrast
    if r.noisy:
        outside = ~head & ~r.rotation
        energy = float(np.median(np.square(volume[outside], dtype=np.float64)))
        if energy >= 1e-3 and head.any():
            out["iqm_fber"] = float(np.median(np.square(volume[head], dtype=np.float64))) / energy
        out["iqm_qi1"] = float(r.artifacts.sum()) / float(r.hat.sum())
    if r.hat.sum() >= MIN_BACKGROUND and head.any() and np.mean(volume[r.hat] != 0) >= 0.01:
        # A ghost needs no noise to be seen, only air that is not blank (a brain extract's).
        mean_head = float(volume[head].mean())
        if mean_head > 0:
            out["iqm_ghost"] = _ghost(volume, head, air) / mean_head
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in out.items()}


def _steps(spacing: tuple[float, ...], sample_mm: float) -> tuple[int, ...]:
    return tuple(max(1, round(sample_mm / float(s))) if sample_mm else 1 for s in spacing[:3])


def _air(
    volume: NDArray[np.float32],
    anatomy: NDArray[np.bool_],
    rotation: NDArray[np.bool_],
    spacing: tuple[float, ...],
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The hat (air more than NEAR_MM from the head, out of the rotation mask) and its
    artifact voxels, as MRIQC's ``artifact_mask`` finds them."""
    reach = [max(1, round(NEAR_MM / s)) for s in spacing]
    near = ndimage.maximum_filter(anatomy.view(np.uint8), size=[2 * r + 1 for r in reach])
    air = ~near.view(bool) & ~rotation
    artifacts = np.zeros_like(air)
    values = volume[air]
    positive = values[values > 0]
    if positive.size < 10:
        return air, artifacts
    spread = float(np.median(np.abs(positive - np.median(positive)))) * MAD_TO_SD
    if spread <= 0:
        return air, artifacts
    distance = ndimage.distance_transform_edt(~anatomy, sampling=spacing)
    distance /= max(float(distance.max()), 1e-9)
    artifacts[air] = values / spread > ARTIFACT_Z
    artifacts &= distance >= ARTIFACT_NEAR
    artifacts = ndimage.binary_opening(artifacts, ndimage.generate_binary_structure(3, 1))
    return air, artifacts


def _tissue_classes(
    values: NDArray[np.float32],
) -> Callable[[NDArray[Any]], NDArray[np.uint8]] | None:
    """A classifier of intensities into FAST's labels (1 CSF, 2 GM, 3 WM), from a 1D
    three-class k-means of the brain's; None when the classes are not distinct enough (each at
    least 5% of the brain). Grey matter is the middle class in every structural contrast;
    white matter the larger of the two others.

    The k-means runs on a 256-bin histogram of the intensities (weighted bin centres), which
    gives the same class boundaries as on the voxels at a thousandth of the cost."""
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
    sizes = np.bincount(np.searchsorted(bounds, values), minlength=3)  # 0 dark .. 2 bright
    if sizes.min() < 0.05 * values.size:
        return None
    white = 0 if sizes[0] > sizes[2] else 2
    fast = np.zeros(3, dtype=np.uint8)
    fast[white], fast[1], fast[2 - white] = 3, 2, 1

    def classify(x: NDArray[Any]) -> NDArray[np.uint8]:
        return fast[np.searchsorted(bounds, x)]

    return classify


def _cores(
    data: NDArray[Any],
    brain: NDArray[np.bool_],
    steps: tuple[int, ...],
    tissues: NDArray[np.uint8],
    classify: Callable[[NDArray[Any]], NDArray[np.uint8]],
) -> NDArray[np.uint8]:
    """``tissues`` (on the grid) where each of the point's six neighbours in the image is in
    the brain and of the point's class; 0 elsewhere."""
    where = np.nonzero(tissues)  # grid points in the brain
    labels = tissues[where]
    full = [w * step for w, step in zip(where, steps, strict=True)]
    core = np.ones(labels.shape, dtype=bool)
    for axis in range(3):
        for offset in (-1, 1):
            moved = list(full)
            moved[axis] = np.clip(full[axis] + offset, 0, data.shape[axis] - 1)
            index = tuple(moved)
            core &= brain[index]
            core &= classify(np.asarray(data[index], dtype=np.float32)) == labels
    cores = np.zeros_like(tissues)
    cores[tuple(w[core] for w in where)] = labels[core]
    return cores


def _snr(tissue: Tissue) -> float:
    """MRIQC's ``snr``: median over SD with the n/(n-1) correction."""
    if tissue.n < 2 or tissue.sd <= 0:
        return float("nan")
    return tissue.median / (tissue.sd * float(np.sqrt(tissue.n / (tissue.n - 1))))


def _efc(values: NDArray[np.float32], factor: float) -> float | None:
    """MRIQC's ``efc`` of the full grid, from the sums of a sample of it: with N voxels and
    B = sqrt(sum x^2), EFC = sum (x/B) ln(x/B) / (sqrt(N) ln(1/sqrt(N))), and every sum of the
    full grid is ``factor`` times the sample's."""
    x = values.astype(np.float64)
    x = x[x > 0]  # MRIQC clips negatives to 0 first, and 0 adds nothing to the sums
    n = values.size * factor
    if n < 2 or x.size == 0:
        return None
    b = float(np.sqrt(factor * np.sum(x * x)))
    entropy = factor * float(np.sum(x * np.log(x))) / b - np.log(b) * factor * float(x.sum()) / b
    return float(entropy / (np.sqrt(n) * np.log(1.0 / np.sqrt(n))))


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
    volume: NDArray[np.float32], anatomy: NDArray[np.bool_], air: NDArray[np.bool_]
) -> float:
    worst = 0.0
    for axis in range(3):
        band = np.roll(anatomy, anatomy.shape[axis] // 2, axis=axis) & air
        others = air & ~band
        if band.sum() < 100 or others.sum() < 100:
            continue
        worst = max(worst, float(volume[band].mean()) - float(volume[others].mean()))
    return max(worst, 0.0)


def _fwhm(data: NDArray[Any], region: NDArray[np.bool_], steps: tuple[int, ...]) -> float | None:
    """Smoothness in voxels from neighbouring voxel pairs along each axis, taken at the points
    of the sampling grid (``steps``): for a Gaussian random field, the correlation of
    neighbours is 1 - var(difference) / (2 var), and FWHM = sqrt(-2 ln 2 / ln(correlation))."""
    grid = tuple(slice(None, None, step) for step in steps)
    inside = region[grid]
    if inside.sum() < 1000:
        return None
    variance = float(np.asarray(data[grid][inside], dtype=np.float64).var())
    if variance <= 0:
        return None
    widths = []
    for axis in range(3):
        n, step = region.shape[axis], steps[axis]
        here, there = list(grid), list(grid)
        here[axis], there[axis] = slice(0, n - 1, step), slice(1, n, step)
        both = region[tuple(here)] & region[tuple(there)]
        pairs = np.asarray(data[tuple(there)][both], dtype=np.float64)
        pairs -= np.asarray(data[tuple(here)][both], dtype=np.float64)
        ratio = 1.0 - float(pairs.var()) / (2.0 * variance)
        if not 0.0 < ratio < 1.0:
            return None  # rougher than white noise, or constant: no Gaussian width fits
        widths.append(float(np.sqrt(-2.0 * np.log(2.0) / np.log(ratio))))
    return float(np.mean(widths))
