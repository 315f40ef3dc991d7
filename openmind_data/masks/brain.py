"""Brain masks: a weights-free template registration, or a learned masker where one is installed.

Every backend implements :class:`BrainMasker`: a 3D image in its native grid and its voxel-to-world
(RAS mm) affine in, a boolean brain mask in the same grid out. :func:`brain_masker` picks one.

**template** (:class:`TemplateBrainMasker`) needs nothing downloaded. Its template is the
synthetic head of :mod:`openmind_data.templates` at 2 mm: the MNI152 2009c symmetric brain
that ships inside nilearn's wheel, wrapped in CSF, skull, scalp, face, ears and neck, rendered
with T1-weighted tissue intensities. Its brain mask is the phantom's brain (grey + white matter +
CSF fractions above one half: cerebrum, cerebellum and brainstem). Why not nilearn's own MNI152
T1 and brain mask: that T1 is skull-stripped, and a brain-only template registered to a whole
head spreads over the scalp (Dice 0.60-0.71 on the synthetic heads, against 0.97-0.99 with the
phantom head); the phantom is a whole head, so the head's outline, the dark skull and the bright
scalp all guide the registration. It is a crude head (ellipsoids and distance shells), so on
real heads the registration leans on the brain and the overall head shape, not on the face.

The registration (SimpleITK) maps the image onto the template:

1. Both images are resampled onto axis-aligned 4 mm grids, after block means and a blur of each
   native axis to that resolution, so thick slices and flipped, permuted or oblique axes are
   dealt with once, in numpy. Intensities are clipped to the 0.5-99.5th percentiles of the
   head's non-zero voxels and scaled to 0-1 (on the block means). Working voxels outside the
   image's field of view are left out of the metric (a fixed-image mask); zeroed regions stay
   in, as dark as air.
2. Initialisation: the centres of mass of the two heads are aligned; from there, shifts along
   the superior-inferior axis (where fields of view differ most: with or without the neck;
   wider for a slab that shows part of the head) are each optimised briefly at 16 mm (20
   iterations, on images blurred in numpy once per image, and once per process for the
   template; the template's gradient by central differences) and the best by the metric is
   kept.
3. A similarity transform (rotation, translation, one scale) at 8 then 4 mm, then an affine one
   at 4 mm, by Mattes mutual information (32 bins, 10% random samples drawn with a fixed seed,
   so a mask replays exactly) and regular-step gradient descent. A stage whose scales leave the
   range of heads (0.6-1.8, one axis at most 1.35 times another) is discarded.
4. The template's brain mask is resampled (linear, threshold 0.5) into the native grid and
   limited to the head: the caller's mask when given (the masks stage passes the head with any
   defaced region, so that a defacing cutting the brain shows in the overlap check), otherwise
   what is not a solid region of fill (zero padding, a defaced region).

An image already skull-stripped (solid fill around a body with the volume of a brain, not of a
head) needs no registration: its brain mask is that body, holes filled. The masks stage makes
that call itself (:func:`openmind_data.masks.foreground`) and hands the masker the head; given a
head, the masker takes it as one and looks for neither solid fill nor a stripped body.

**Caveat on accuracy figures.** The synthetic collection of :mod:`openmind_data.synth` renders
its subjects from the same phantom, hence from the same MNI152 brain, posed by a similarity
transform. Dice against its truth is therefore an upper bound for real data, where brains differ
in shape from the template and heads from the phantom; HD-BET is the backend for real data.

**deepbet** (:mod:`openmind_data.masks.deepbet`) and **hd-bet** (:mod:`openmind_data.masks.hdbet`)
are the learned backends; both need torch and their weights, and import them only when asked.
'auto' takes deepbet for every image of 1.5 mm or finer (:data:`LEARNED_MIN_VOXELS`) wherever
it is installed, and for every image on CUDA: on Colin27 (a real 1 mm T1 head,
``benchmarks/masks.py``) the two have the same brain Dice, but the toolkit's defacing from
deepbet's mask removed 95% or more of the facial surface on every variation, from the
template's 91-99%. That costs time on the CPU: deepbet 3.6-5.7 s a 1 mm head, the template
0.6-1.3 s (``benchmarks/build.py``, 2026-12-04, the later figures the faster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the alias SimpleITK's own documentation uses)
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.errors import ConfigError
from openmind_data.masks.deepbet import DeepBetBrainMasker
from openmind_data.masks.hdbet import HDBET_DEFAULT_PARAMS, HDBetBrainMasker
from openmind_data.masks.hdbet import missing_message as hdbet_missing
from openmind_data.masks.learned import BrainMasker, package_version
from openmind_data.templates import CONTRASTS, PHANTOM_VERSION, Tissue, head_phantom

__all__ = [
    "BACKENDS",
    "HDBET_DEFAULT_PARAMS",
    "LEARNED_MIN_VOXELS",
    "AutoBrainMasker",
    "BrainMasker",
    "TemplateBrainMasker",
    "brain_masker",
    "check_masker",
    "for_image",
]

log = logging.getLogger(__name__)

#: Registration grid (mm), and the template's resolution (mm).
WORK_SPACING: Final = 4.0
TEMPLATE_RESOLUTION: Final = 2
#: Fixed seed of the metric's random sampling: the same image always gives the same mask.
SEED: Final = 20240601
#: A body inside solid fill with a volume (mm^3) in this range is a brain, not a head: adult
#: brains with their CSF are 1.1-1.9 L, heads with the neck cut 3.5 L and more.
BRAIN_VOLUME_MIN: Final = 0.5e6
BRAIN_VOLUME_MAX: Final = 2.6e6
#: In a skull-stripped image the solid fill is at least this share of the body's volume, and
#: the body covers at most this share of the grid's faces (a slab of a head covers much more).
SURROUND_SHARE: Final = 0.3
FACE_SHARE: Final = 0.25
#: Scales a registration may find between a head and the template, per axis, and the most one
#: axis may be stretched relative to another; beyond them a stage is taken to have failed.
SCALE_RANGE: Final = (0.6, 1.8)
ANISOTROPY_MAX: Final = 1.35


# -- the template backend -----------------------------------------------------------------------
class _Template:
    """The registration template on its own grid, with its brain mask and head mask."""

    def __init__(self, resolution: int) -> None:
        phantom = head_phantom(resolution)
        means = CONTRASTS["T1w"]
        lut = np.zeros(max(Tissue) + 1, dtype=np.float32)
        for tissue, value in means.items():
            lut[tissue] = value
        image = lut[phantom.labels]
        fractions = phantom.gm + phantom.wm + phantom.csf
        in_brain = fractions > 0
        mixed = (
            phantom.gm * means[Tissue.GM]
            + phantom.wm * means[Tissue.WM]
            + phantom.csf * means[Tissue.CSF]
        )
        image[in_brain] = mixed[in_brain]
        self.image = image
        self.brain = (fractions > 0.5).astype(np.float32)
        where = np.argwhere(self.brain > 0)
        self.brain_box = (where.min(axis=0), where.max(axis=0))
        self.head = phantom.labels != Tissue.AIR
        self.affine = phantom.affine.astype(np.float64)


@lru_cache(maxsize=2)
def _template(resolution: int = TEMPLATE_RESOLUTION) -> _Template:
    return _Template(resolution)


@lru_cache(maxsize=4)
def _template_working(
    spacing: float,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """The template on the working grid: image, origin and head centre (world mm)."""
    template = _template()
    image, _inside, origin = _working_image(template.image, template.affine, template.head, spacing)
    image.setflags(write=False)
    return image, origin, _head_centre(image, None, origin, spacing)


def _blurred(image: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """A working image blurred by ``sigma`` voxels for a stage (itself for 0)."""
    return ndimage.gaussian_filter(image, sigma) if sigma > 0 else image


@lru_cache(maxsize=8)
def _template_image(spacing: float, sigma: float) -> sitk.Image:
    """The template's working image blurred for a stage, as SimpleITK takes it."""
    image, origin, _ = _template_working(spacing)
    return _to_sitk(_blurred(image, sigma), origin, spacing)


def _warp_mask(
    template: _Template, native_to_template: NDArray[np.float64], shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    """The template's brain mask in the native grid (linear interpolation, threshold 1/2).

    Only the native voxels within the bounding box of the warped brain are looked at, and of
    those only the ones near the brain's edge are interpolated (:func:`_warp_near_edge`).
    """
    box = np.array(template.brain_box, dtype=np.float64)  # (2, 3) template voxels
    corners = np.array(np.meshgrid(*box.T, indexing="ij")).reshape(3, -1)
    to_native = np.linalg.inv(native_to_template) @ template.affine
    native = to_native[:3, :3] @ corners + to_native[:3, 3:4]
    low = np.clip(np.floor(native.min(axis=1)).astype(int) - 1, 0, None)
    high = np.minimum(np.ceil(native.max(axis=1)).astype(int) + 2, shape)
    mask = np.zeros(shape, dtype=bool)
    if np.any(high <= low):
        return mask
    offset = np.eye(4)
    offset[:3, 3] = low
    sub = tuple(int(h - lo) for lo, h in zip(low, high, strict=True))
    box_to_template = np.linalg.inv(template.affine) @ native_to_template @ offset
    values = _warp_near_edge(template.brain, box_to_template, sub)
    mask[tuple(slice(int(lo), int(h)) for lo, h in zip(low, high, strict=True))] = values
    return mask


#: Native voxels per side of the blocks :func:`_warp_near_edge` decides at once.
WARP_BLOCK: Final = 4


def _warp_near_edge(
    brain: NDArray[np.float32], to_template: NDArray[np.float64], shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    """``brain`` (the template's brain mask, 0/1) linearly interpolated at the voxels of a grid
    of ``shape`` (voxel -> its voxel ``to_template``), >= 1/2; interpolated only near its edge.

    The grid is cut into blocks of :data:`WARP_BLOCK` voxels a side. A voxel's value is
    interpolated from the template voxels less than one voxel from where it lands, so all of a
    block's voxels are 1 (0) when every template voxel within ``reach`` of where the block's
    centre lands is 1 (0), ``reach`` bounding how far the block's voxels land from its centre,
    plus that one voxel and the half voxel of rounding to the nearest one. Those blocks take
    their value at once (from a minimum and a maximum filter of the template, looked up at the
    centres); the voxels of the others, along the edge, are interpolated one by one: the same
    mask as interpolating every voxel, in a fraction of the time.
    """
    jacobian = to_template[:3, :3]
    reach = float(np.abs(jacobian).sum(axis=1).max()) * (WARP_BLOCK - 1) / 2
    size = 2 * int(np.ceil(reach + 1.5)) + 1
    coarse = tuple(-(-n // WARP_BLOCK) for n in shape)
    if size > 11 or min(shape) < 2 * WARP_BLOCK:  # coarse images, small boxes: every voxel
        return _resample_index(brain, to_template, shape) >= 0.5
    centres = to_template.copy()  # coarse voxel -> template voxel, at each block's centre
    centres[:3, :3] = jacobian * WARP_BLOCK
    centres[:3, 3] = to_template[:3, :3] @ np.full(3, (WARP_BLOCK - 1) / 2) + to_template[:3, 3]
    # Outside the template's grid interpolation reads zeros; a block whose centre lands
    # outside it is left undecided.
    lowest, highest = _brain_extremes(size)
    inside = _resample_index(lowest, centres, coarse, 0)
    outside = _resample_index(highest, centres, coarse, 0, cval=1.0)
    cut = tuple(slice(0, n) for n in shape)
    mask = _blocks(inside == 1.0, shape)[cut]
    edge = np.nonzero(_blocks(outside != 0.0, shape)[cut] & ~mask)
    where = jacobian @ np.array(edge, dtype=np.float64) + to_template[:3, 3:4]
    values = ndimage.map_coordinates(brain, where, order=1, mode="constant", prefilter=False)
    mask[edge] = values >= 0.5
    return mask


@lru_cache(maxsize=8)
def _brain_extremes(size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The least and the greatest value of the template's brain mask within a cube of ``size``
    voxels a side around each voxel (zero beyond the grid)."""
    brain = _template().brain
    lowest = ndimage.minimum_filter(brain, size=size, mode="constant", cval=0.0)
    highest = ndimage.maximum_filter(brain, size=size, mode="constant", cval=0.0)
    lowest.setflags(write=False)
    highest.setflags(write=False)
    return lowest, highest


def _blocks(coarse: NDArray[np.bool_], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """Each voxel of ``coarse`` repeated :data:`WARP_BLOCK` times along every axis."""
    out = coarse
    for axis in range(3):
        out = np.repeat(out, WARP_BLOCK, axis=axis)
    return out


@dataclass(frozen=True)
class _Stage:
    """One registration stage: a transform optimised over levels of a resolution pyramid."""

    transform: Literal["similarity", "affine"]
    shrink: tuple[int, ...]  # of the working grid, per level
    smoothing: tuple[float, ...]  # Gaussian sigma per level, in working voxels (SimpleITK's)
    iterations: int
    sampling: float  # share of the fixed mask's voxels the metric samples
    #: The template's gradient from a filtered gradient image (made once per stage), else by
    #: central differences where the metric samples it: the filter's set-up is most of what a
    #: brief stage costs, the differences slow every iteration of a long one.
    gradient_image: bool = True
    #: A Gaussian blur (working voxels) of both images before the stage, by scipy: made once
    #: per image and kept for the template, where SimpleITK's smoothing would blur both again
    #: at every run of the stage (more than half of what a brief start cost).
    blur: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "shrink": list(self.shrink),
            "smoothing_voxels": list(self.smoothing),
            "iterations": self.iterations,
            "sampling": self.sampling,
            "gradient_image": self.gradient_image,
            "blur_voxels": self.blur,
        }


#: Coarse search over starting points (one per superior-inferior shift), then refinement.
START: Final = _Stage("similarity", (4,), (0.0,), 20, 0.1, gradient_image=False, blur=2.0)
STAGES: Final = (
    _Stage("similarity", (2, 1), (1.0, 0.0), 100, 0.1),
    _Stage("affine", (1,), (0.0,), 100, 0.1),
)
#: Superior-inferior shifts (mm) tried from the head centres: fields of view differ most there.
START_SHIFTS_MM: Final = (-20.0, 0.0, 20.0)
#: A field of view shorter than this (mm) from top to bottom is a slab: its starts span more.
SLAB_MM: Final = 150.0
SLAB_SHIFTS_MM: Final = tuple(float(s) for s in range(-75, 76, 15))
HISTOGRAM_BINS: Final = 32


class TemplateBrainMasker:
    """Brain masks by affine registration of a synthetic MNI152 head (see the module docstring).

    Weights-free: everything it needs ships with the toolkit's dependencies.
    """

    name = "template"

    def available(self) -> bool:
        """Always: everything it needs ships with the toolkit's dependencies."""
        return True

    def missing(self) -> list[str]:
        return []

    def __init__(self, *, work_spacing: float = WORK_SPACING, seed: int = SEED) -> None:
        if not work_spacing > 0:
            raise ConfigError(f"work_spacing must be positive (mm), got {work_spacing}")
        self.work_spacing = float(work_spacing)
        self.seed = int(seed)

    def parameters(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "template": "openmind_data.synth.phantom head around the MNI152 2009c brain, T1w",
            "template_resolution_mm": TEMPLATE_RESOLUTION,
            "phantom_version": PHANTOM_VERSION,
            "work_spacing_mm": self.work_spacing,
            "metric": f"MattesMutualInformation({HISTOGRAM_BINS} bins)",
            "optimizer": "RegularStepGradientDescent",
            "start": {
                **START.to_dict(),
                "shifts_mm": list(START_SHIFTS_MM),
                "slab_mm": SLAB_MM,
                "slab_shifts_mm": list(SLAB_SHIFTS_MM),
            },
            "stages": [stage.to_dict() for stage in STAGES],
            "seed": self.seed,
            "brain_extract": {
                "volume_mm3": [BRAIN_VOLUME_MIN, BRAIN_VOLUME_MAX],
                "surround_share": SURROUND_SHARE,
                "face_share": FACE_SHARE,
            },
            "scale_range": list(SCALE_RANGE),
            "anisotropy_max": ANISOTROPY_MAX,
            "simpleitk": sitk.Version.VersionString(),
            "nilearn": package_version("nilearn"),
        }

    def __call__(
        self,
        data: NDArray[np.floating[Any]],
        affine: NDArray[np.float64],
        anatomy: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_]:
        volume = np.asarray(data)
        if volume.ndim != 3:
            raise ValueError(f"brain masks need a 3D image, got shape {volume.shape}")
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {matrix.shape}")
        # float32, copied only when it is not already (nothing below writes to it).
        volume = np.asarray(volume, dtype=np.float32)
        if not np.isfinite(volume).all():
            volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
        if anatomy is not None:
            if anatomy.shape != volume.shape:
                raise ValueError(
                    f"anatomy mask of shape {anatomy.shape} does not match the image's "
                    f"{volume.shape}"
                )
            # The caller has told the head from fill and from a skull-stripped body (the masks
            # stage's foreground does): the brain is looked for inside what it gives.
            head = np.asarray(anatomy, dtype=bool)
            if not head.any():
                return np.zeros(volume.shape, dtype=bool)
        else:
            solid = _solid_fill(volume)
            head = ~solid
            if not head.any():
                return np.zeros(volume.shape, dtype=bool)
            stripped = _brain_body(head, solid, _spacing(matrix))
            if stripped is not None:
                return stripped
        template = _template()
        to_template = self._register(volume, matrix, head, template)
        # Clipped to the head: the caller's anatomy when given (which may include a defaced
        # region, so that a defacing cutting the brain shows), else what is not solid fill.
        mask: NDArray[np.bool_] = _warp_mask(template, to_template @ matrix, volume.shape) & head
        return mask

    def _register(
        self,
        volume: NDArray[np.float32],
        affine: NDArray[np.float64],
        body: NDArray[np.bool_],
        template: _Template,
    ) -> NDArray[np.float64]:
        """The 4x4 world (RAS mm) map from the image's space into the template's."""
        spacing = self.work_spacing
        fixed, inside, origin = _working_image(volume, affine, body, spacing)
        moving_head = _template_working(spacing)[2]
        fixed_head = _head_centre(fixed, inside, origin, spacing)
        mask_img = _to_sitk(inside.astype(np.uint8), origin, spacing)
        blurred: dict[float, sitk.Image] = {}

        def images(stage: _Stage) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
            if stage.blur not in blurred:
                blurred[stage.blur] = _to_sitk(_blurred(fixed, stage.blur), origin, spacing)
            return blurred[stage.blur], _template_image(spacing, stage.blur), mask_img

        best: tuple[float, sitk.Similarity3DTransform] | None = None
        for shift in _start_shifts(inside, spacing):
            start = sitk.Similarity3DTransform()
            start.SetCenter(tuple(float(c) for c in fixed_head))
            offset = moving_head - fixed_head + np.array([0.0, 0.0, shift])
            start.SetTranslation(tuple(float(c) for c in offset))
            try:
                score = self._run(START, start, *images(START))
            except RuntimeError as error:  # ITK: too few samples overlap the template
                log.debug("start at %+.0f mm failed: %s", shift, error)
                continue
            if best is None or score < best[0]:
                best = (score, start)
        if best is None:
            raise RuntimeError("template registration failed from every starting point")
        transform: sitk.Transform = best[1]
        matrix = _to_matrix(transform)
        for stage in STAGES:
            if stage.transform == "affine":
                previous = transform
                transform = sitk.AffineTransform(3)
                transform.SetCenter(previous.GetCenter())
                transform.SetMatrix(previous.GetMatrix())
                transform.SetTranslation(previous.GetTranslation())
            self._run(stage, transform, *images(stage))
            refined = _to_matrix(transform)
            if not _plausible(refined):
                # A field of view that shows too little of the head (a thin slab) leaves the
                # affine stretch unconstrained: keep the last plausible stage.
                log.warning("template registration: implausible %s stage ignored", stage.transform)
                break
            matrix = refined
        return matrix

    def _run(
        self,
        stage: _Stage,
        transform: sitk.Transform,
        fixed: sitk.Image,
        moving: sitk.Image,
        mask: sitk.Image,
    ) -> float:
        """Optimise ``transform`` in place over one stage; returns the final metric value."""
        reg = sitk.ImageRegistrationMethod()
        # One thread and one work unit: ITK sums the metric per work unit, so its result (and
        # the mask) would depend on the thread count and scheduling; a build parallelises over
        # images instead. The thread count alone is not enough: the metric splits its domain
        # into work units (by default as many as the machine has cores) and Mattes MI adds each
        # unit's joint-histogram derivatives into a shared buffer under a try-lock, in whatever
        # order the units get there. Those sums differ in the last bits from run to run, the
        # optimiser's path drifts, and a mask could flip voxels between processes.
        reg.SetNumberOfThreads(1)
        reg.SetNumberOfWorkUnits(1)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(stage.sampling, self.seed)
        reg.SetMetricFixedMask(mask)
        reg.SetMetricUseMovingImageGradientFilter(stage.gradient_image)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0,
            minStep=0.01,
            numberOfIterations=stage.iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-6,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(stage.shrink))
        reg.SetSmoothingSigmasPerLevel(list(stage.smoothing))
        reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)
        reg.SetInitialTransform(transform, inPlace=True)
        reg.Execute(fixed, moving)
        return float(reg.GetMetricValue())


def _spacing(affine: NDArray[np.float64]) -> NDArray[np.float64]:
    spacing: NDArray[np.float64] = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return spacing


def _solid_fill(volume: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Regions of one exact value (zero, or the image's minimum) thick enough to be padding,
    defacing or masking; the odd exact zero of an integer image's air is not one."""
    solid = np.zeros(volume.shape, dtype=bool)
    for fill in {0.0, float(volume.min())}:
        same = volume == fill
        if same.any():
            # An opening in which the grid's edge counts as fill, so padding planes survive.
            solid |= _cross(_cross(same, np.logical_and), np.logical_or) & same
    return solid


def _cross(mask: NDArray[np.bool_], combine: np.ufunc) -> NDArray[np.bool_]:
    """One step of ``scipy.ndimage``'s binary erosion (``combine`` and, the grid's edge
    counting as set) or dilation (or, the edge unset) by its default six-neighbour cross, as
    six shifted in-place ``combine``s of the volume with itself: the same voxels, half
    the time on a 1 mm head."""
    out = mask.copy()
    for axis in range(mask.ndim):
        low: list[Any] = [slice(None)] * mask.ndim
        high: list[Any] = [slice(None)] * mask.ndim
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        combine(out[tuple(low)], mask[tuple(high)], out=out[tuple(low)])
        combine(out[tuple(high)], mask[tuple(low)], out=out[tuple(high)])
    return out


def _brain_body(
    body: NDArray[np.bool_], solid: NDArray[np.bool_], spacing: NDArray[np.float64]
) -> NDArray[np.bool_] | None:
    """The mask of an already skull-stripped image, or None when the image shows a head.

    Skull-stripped: solid fill surrounds the body (it makes up nearly all of the image outside
    the body, is not a mere defaced corner, and the body keeps clear of the grid's faces), and
    the body has the volume of a brain, not of a head.
    """
    inside = int(body.sum())
    if int(solid.sum()) < SURROUND_SHARE * inside:
        return None
    faces = [np.take(body, index, axis=axis) for axis in range(3) for index in (0, -1)]
    if sum(int(f.sum()) for f in faces) > FACE_SHARE * sum(f.size for f in faces):
        return None
    labels, count = ndimage.label(body)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1
    brain = np.isin(labels, keep)
    volume_mm3 = float(brain.sum()) * float(np.prod(spacing))
    if not BRAIN_VOLUME_MIN <= volume_mm3 <= BRAIN_VOLUME_MAX:
        return None
    outside = ~ndimage.binary_dilation(brain, iterations=2)
    if not outside.any() or float(solid[outside].mean()) < 0.98:
        return None
    filled: NDArray[np.bool_] = ndimage.binary_fill_holes(brain)
    return filled


def _working_image(
    volume: NDArray[np.float32],
    affine: NDArray[np.float64],
    body: NDArray[np.bool_],
    spacing: float,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.float64]]:
    """``volume`` on an axis-aligned RAS grid of ``spacing`` mm covering its field of view.

    Returns the image with intensities clipped to the 0.5-99.5th percentile of the body's
    non-zero voxels above the image's minimum (a fill value) and scaled to 0-1; the mask of
    working voxels inside the field of view; and the world position of the grid's first voxel.
    """
    native = _spacing(affine)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in volume.shape], indexing="ij"))
    world = affine[:3, :3] @ corners.reshape(3, -1) + affine[:3, 3:4]
    low, high = world.min(axis=1), world.max(axis=1)
    shape = tuple(int(np.ceil((hi - lo) / spacing)) + 1 for lo, hi in zip(low, high, strict=True))
    grid = np.diag([spacing, spacing, spacing, 1.0])
    grid[:3, 3] = low

    # Percentiles of about a million voxels are plenty: every step-th voxel along each axis.
    step = max(1, round(float(np.cbrt(volume.size / 1_000_000))))
    every = (slice(None, None, step),) * 3
    values = volume[every][body[every]]
    lowest = float(values.min()) if values.size else 0.0
    values = values[(values != 0) & (values > lowest)]
    bottom, top = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
    # Anti-aliasing to the working resolution: means of whole blocks of native voxels (at most
    # half a working voxel a side: 2 x 2 x 2 at 1 mm), then a Gaussian blur of each axis for
    # the rest, then sampling. Intensities are clipped and scaled on the blocks (8 times fewer
    # voxels at 1 mm): a bright voxel is clipped after the mean with its neighbours.
    factors = tuple(max(1, int(spacing / (2 * size))) for size in native)
    reduced, reduced_affine = _block_means(volume, affine, factors)
    reduced -= np.float32(bottom)
    reduced *= np.float32(1.0 / max(float(top - bottom), 1e-6))
    np.clip(reduced, 0.0, 1.0, out=reduced)
    size = native * np.array(factors)
    sigma = np.sqrt(np.clip(spacing**2 - size**2, 0.0, None)) / 2.355 / size
    image = _resample(ndimage.gaussian_filter(reduced, sigma), reduced_affine, grid, shape)
    return image, _in_view(volume.shape, affine, grid, shape), grid[:3, 3].copy()


def _block_means(
    volume: NDArray[np.float32], affine: NDArray[np.float64], factors: tuple[int, ...]
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Means of blocks of ``factors`` voxels (a partial block at a grid's end is dropped), and
    the voxel-to-world matrix of the grid of blocks (each block at the centre of its voxels)."""
    out = volume
    for axis, factor in enumerate(factors):
        if factor == 1:
            continue
        whole = out.shape[axis] // factor * factor
        lead: tuple[slice, ...] = (slice(None),) * axis
        every = [out[(*lead, slice(offset, whole, factor))] for offset in range(factor)]
        total = every[0] + every[1]  # a new array: the caller's volume is never written
        for part in every[2:]:
            total += part
        out = total
    if out is volume:
        return volume.copy(), affine.copy()
    out *= np.float32(1.0 / np.prod(factors))
    scale = np.diag([*(float(f) for f in factors), 1.0])
    scale[:3, 3] = (np.array(factors) - 1) / 2
    return out, affine @ scale


def _in_view(
    shape: tuple[int, ...],
    affine: NDArray[np.float64],
    grid: NDArray[np.float64],
    out_shape: tuple[int, ...],
) -> NDArray[np.bool_]:
    """The voxels of the grid ``grid`` (voxel -> world) of ``out_shape`` whose centre lies within
    the field of view of an image of ``shape`` (between its first and last voxel centres)."""
    to_native = np.linalg.inv(affine) @ grid
    axes = np.ogrid[tuple(slice(0, n) for n in out_shape)]
    inside = np.ones(out_shape, dtype=bool)
    for row, n in enumerate(shape):
        index = to_native[row, 3] + sum(to_native[row, k] * axes[k] for k in range(3))
        inside &= (index >= -1e-6) & (index <= n - 1 + 1e-6)
    return inside


def _resample_index(
    source: NDArray[Any],
    to_source: NDArray[np.float64],
    shape: tuple[int, ...],
    order: int = 1,
    cval: float = 0.0,
) -> NDArray[np.float32]:
    """``source`` interpolated (``order`` 1: linear, 0: nearest; ``cval`` outside) at the voxels
    of a grid of ``shape``, voxel ``i`` at source voxel ``to_source @ i``."""
    result: NDArray[np.float32] = ndimage.affine_transform(
        np.asarray(source, dtype=np.float32),
        to_source[:3, :3],
        offset=to_source[:3, 3],
        output_shape=shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    return result


def _resample(
    source: NDArray[Any],
    source_affine: NDArray[np.float64],
    out_affine: NDArray[np.float64],
    shape: tuple[int, ...],
) -> NDArray[np.float32]:
    """``source`` (voxel->world ``source_affine``) sampled at the voxels of an output grid whose
    voxel->world matrix is ``out_affine`` (linear interpolation, zero outside)."""
    return _resample_index(source, np.linalg.inv(source_affine) @ out_affine, shape)


def _head_centre(
    image: NDArray[np.float32],
    mask: NDArray[np.bool_] | None,
    origin: NDArray[np.float64],
    spacing: float,
) -> NDArray[np.float64]:
    """World centre of mass of the head's voxels (brighter than a tenth of the range)."""
    head = image > 0.1
    if mask is not None:
        head &= mask
    head = ndimage.binary_opening(head, iterations=1)
    if not head.any():
        head = np.ones(image.shape, dtype=bool)
    centre = np.array(ndimage.center_of_mass(head), dtype=np.float64)
    result: NDArray[np.float64] = origin + spacing * centre
    return result


def _start_shifts(inside: NDArray[np.bool_], spacing: float) -> tuple[float, ...]:
    """Superior-inferior shifts to start from: a wider search where the field of view is a slab
    that shows only part of the head, so its centre says little about where the head is."""
    rows = np.flatnonzero(inside.any(axis=(0, 1)))
    extent = (rows[-1] - rows[0] + 1) * spacing if rows.size else 0.0
    if extent >= SLAB_MM:
        return START_SHIFTS_MM
    return SLAB_SHIFTS_MM


def _plausible(matrix: NDArray[np.float64]) -> bool:
    """Whether a head-to-template map scales and stretches as heads differ from one another."""
    stretch = np.linalg.svd(matrix[:3, :3], compute_uv=False)
    low, high = float(stretch.min()), float(stretch.max())
    return SCALE_RANGE[0] <= low and high <= SCALE_RANGE[1] and high <= ANISOTROPY_MAX * low


def _to_sitk(array: NDArray[Any], origin: NDArray[np.float64], spacing: float) -> sitk.Image:
    """An axis-aligned image whose physical frame is the RAS world (the frame is only shared
    between the two images of the registration, so ITK's LPS convention does not matter)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing((spacing, spacing, spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    return image


def _to_matrix(transform: sitk.Transform) -> NDArray[np.float64]:
    """The 4x4 matrix of an ITK similarity or affine transform, x -> A (x - c) + c + t."""
    a = np.array(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.array(transform.GetCenter(), dtype=np.float64)
    t = np.array(transform.GetTranslation(), dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = a
    matrix[:3, 3] = c + t - a @ c
    return matrix


#: Backends by name: a factory of (hdbet_params, device). 'auto' is not one: it picks among them.
_FACTORIES: Final[dict[str, Callable[[str | Path | None, str], BrainMasker]]] = {
    "template": lambda _params, _device: TemplateBrainMasker(),
    "deepbet": lambda _params, device: DeepBetBrainMasker(device=device),
    "hd-bet": lambda params, device: HDBetBrainMasker(params, device=device),
}
#: Backend names :func:`brain_masker` accepts: 'auto' and the registered ones.
BACKENDS: Final = ("auto", *_FACTORIES)
#: The learned backends, in the order 'auto' prefers them on CUDA and on the CPU. HD-BET runs
#: on the CPU only when asked for by name: one fold took 11-22 minutes per head there.
_PREFERENCE: Final = {"cuda": ("hd-bet", "deepbet"), "cpu": ("deepbet",)}
#: On the CPU, 'auto' runs the learned masker on images of at least this many voxels. deepbet's
#: cost is fixed (it resamples every image to 128^3, then its brain's box to 256^3): 3.5-5.7 s
#: here, 4-6x the template's 0.6-1.3 s on a 1 mm head and more on a coarse one. On CUDA the learned
#: masker runs on every image.
LEARNED_MIN_VOXELS: Final = 2_000_000


class AutoBrainMasker:
    """'auto': the first installed learned masker trained on the image's contrast (a learned
    backend's ``contrasts``; None: any), where the image is large enough for its fixed cost
    (:data:`LEARNED_MIN_VOXELS`, 0 on CUDA); the template otherwise. Each image records the
    backend that made its mask (:func:`for_image`)."""

    name = "auto"

    def __init__(self, learned: tuple[BrainMasker, ...], min_voxels: int) -> None:
        self.learned = learned
        self.template = TemplateBrainMasker()
        self.min_voxels = int(min_voxels)

    def pick(self, shape: tuple[int, ...], modality: str | None = None) -> BrainMasker:
        """The backend for an image of ``shape`` and ``modality`` (None: not known)."""
        if int(np.prod(shape[:3])) >= self.min_voxels:
            for masker in self.learned:
                contrasts = getattr(masker, "contrasts", None)
                if contrasts is None or modality is None or modality in contrasts:
                    return masker
        return self.template

    def available(self) -> bool:
        return True

    def missing(self) -> list[str]:
        return []

    def parameters(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "learned": [masker.name for masker in self.learned],
            "learned_min_voxels": self.min_voxels,
        }

    def __call__(
        self,
        data: NDArray[np.floating[Any]],
        affine: NDArray[np.float64],
        anatomy: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_]:
        return self.pick(np.shape(data))(data, affine, anatomy)


@lru_cache(maxsize=8)
def brain_masker(
    backend: str = "auto", *, hdbet_params: str | Path | None = None, device: str = "cpu"
) -> BrainMasker:
    """The brain-mask backend called ``backend``: one of :data:`BACKENDS`.

    'auto' (:class:`AutoBrainMasker`) takes the first learned masker that is installed, in
    :data:`_PREFERENCE` order for the device (HD-BET then deepbet on CUDA; deepbet on the CPU),
    and the template otherwise. A learned backend asked for by name and not installed is a
    ConfigError that says what to install. One instance per process and arguments: a learned
    masker loads its networks once.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown brain-mask backend {backend!r}; choose from {list(BACKENDS)}")
    if backend != "auto":
        masker = _FACTORIES[backend](hdbet_params, device)
        if not masker.available():
            raise ConfigError(_learned_missing(backend, masker.missing()))
        return masker
    kind = "cuda" if device.startswith("cuda") else "cpu"
    candidates = (_FACTORIES[name](hdbet_params, device) for name in _PREFERENCE[kind])
    learned = tuple(candidate for candidate in candidates if candidate.available())
    if not learned:
        log.info("no learned brain masker installed: using the template brain masker")
    return AutoBrainMasker(learned, 0 if kind == "cuda" else LEARNED_MIN_VOXELS)


def for_image(
    masker: BrainMasker, shape: tuple[int, ...], modality: str | None = None
) -> BrainMasker:
    """The backend that masks an image of ``shape`` and ``modality``: ``masker``, or the one
    'auto' picks."""
    return masker.pick(shape, modality) if isinstance(masker, AutoBrainMasker) else masker


def check_masker(
    masker: BrainMasker | None, shape: tuple[int, ...], modality: str | None = None
) -> BrainMasker | None:
    """A learned brain masker to check a cut that ``masker`` placed on an image of ``shape``
    and ``modality``: where ``masker`` is the template and 'auto' would run a learned one on
    that image (see :mod:`openmind_data.masks.stage`); else None."""
    if masker is None or masker.name != "template":
        return None
    candidate = for_image(brain_masker("auto"), shape, modality)
    return candidate if candidate.name != "template" else None


def _learned_missing(backend: str, missing: list[str]) -> str:
    if backend == "hd-bet":
        return hdbet_missing(HDBET_DEFAULT_PARAMS, missing)
    return (
        f"the {backend} brain masker needs {', '.join(missing)}; install torch (the ssl extra) "
        f"and 'pip install --no-deps {backend}', or choose 'template'"
    )
