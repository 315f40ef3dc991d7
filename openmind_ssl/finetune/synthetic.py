"""Synthetic downstream tasks: white-matter lesions on the pretraining collection's synthetic heads.

Real fine-tuning datasets cannot be downloaded here, so ``openmind-ssl finetune`` can train on
two made-up ones instead:

- segmentation (:func:`write_segmentation_task`), in nnU-Net v2's raw layout: T1w and FLAIR (or
  any of :data:`CHANNELS`) of heads with 1-4 ellipsoidal lesions, labelled lesion core (1) and a
  perilesional rim (2). The core is dark on T1w and bright on FLAIR, the rim only mildly bright on
  FLAIR, where it looks like grey matter: telling core from rim from cortex takes both channels.
- classification (:func:`write_classification_task`): FLAIR images of healthy heads and of heads
  with 2-5 lesions, listed in a CSV.

A head is :func:`~openmind_data.templates.head_phantom` posed by
:func:`~openmind_data.synth.subject_transform` and sampled on an isotropic RAS grid; each
channel gets its own intensity response, scale, bias field and Rician noise. Lesions are placed
in the phantom's frame, centred in deep white matter, and clipped to the brain.

Random parameters are drawn first (:func:`case_spec`, a :class:`CaseSpec` per case, seeded by the
task seed, the task and the case index) and rendered by a deterministic function
(:func:`render_case`), so any case can be replayed, or replayed without its lesions: it then
differs from the written image only inside the lesions and their rims.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.errors import ConfigError
from openmind_data.synth import (
    BRAIN_FLAG,
    NativeGrid,
    bias_field,
    label_codes,
    phantom_resolution,
    plan_grid,
    rician,
    sample_phantom,
    save_nifti,
    seed_for,
    subject_transform,
    tissue_image,
    world_coordinates,
)
from openmind_data.templates import CONTRASTS, Tissue, head_phantom

__all__ = [
    "CHANNELS",
    "CLASSES",
    "LABELS",
    "MAX_VOXEL_MM",
    "Acquisition",
    "CaseSpec",
    "Lesion",
    "RenderedCase",
    "TaskKind",
    "case_spec",
    "draw_case",
    "render_case",
    "write_classification_task",
    "write_segmentation_task",
]

log = logging.getLogger(__name__)

TaskKind = Literal["segmentation", "classification"]

#: Segmentation labels, as nnU-Net's dataset.json lists them.
LABELS = {"background": 0, "lesion": 1, "perilesional": 2}
#: Classification labels: even case indices are healthy, odd ones carry lesions.
CLASSES = ("healthy", "lesions")

#: Lesion intensity relative to the contrast's white matter: (least, most) for the core, from a
#: lesion's severity 0..1, and for the rim (``None``: the rim keeps its tissue's intensity).
_LESION_CONTRAST: Mapping[str, tuple[tuple[float, float], tuple[float, float] | None]] = {
    "T1w": ((0.65, 0.45), None),
    "T2w": ((1.6, 2.1), (1.1, 1.25)),
    "FLAIR": ((1.5, 1.9), (1.12, 1.3)),
}
#: The contrasts a case can be rendered in.
CHANNELS = tuple(_LESION_CONTRAST)

#: Lesion semi-axes (mm): at 4 mm voxels the smallest lesion still spans three voxels.
_SEMI_AXES_MM = (6.0, 14.0)
#: Voxels coarser than this would resolve the smallest lesion as a voxel or two.
MAX_VOXEL_MM = 8.0
#: Lesion centres lie in white matter at least this deep inside the brain (mm), so most of even
#: the largest lesion stays inside it.
_CENTRE_DEPTH_MM = 15.0
_LESIONS_PER_CASE: Mapping[TaskKind, tuple[int, int]] = {
    "segmentation": (1, 4),
    "classification": (2, 5),
}


@dataclass(frozen=True)
class Lesion:
    """An ellipsoid in the phantom's frame (MNI millimetres)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]  # mm, along the columns of ``rotation``
    rotation: NDArray[np.float64]  # 3x3, orthonormal
    severity: float  # 0..1: how far the core's intensity departs from white matter


@dataclass(frozen=True)
class Acquisition:
    """How one channel of a case was 'scanned'."""

    gamma: float  # intensity response, applied to the tissue intensities
    scale: float  # scanner units per unit of tissue intensity
    bias: float  # log peak-to-peak of the bias field
    snr: float  # 95th brain percentile over the noise sigma


@dataclass(frozen=True)
class CaseSpec:
    """Everything that decides one case; :func:`render_case` turns it into images and labels."""

    grid: NativeGrid
    pose: NDArray[np.float64]  # native world mm -> phantom mm
    lesions: tuple[Lesion, ...]
    rim_voxels: int  # width of the perilesional rim
    rim_severity: float  # 0..1, as Lesion.severity, for the rim
    acquisitions: Mapping[str, Acquisition]  # one per name in CHANNELS
    noise_seed: int  # bias fields and noise; one stream per channel


@dataclass(frozen=True)
class RenderedCase:
    """A case's images (float32, one per requested channel) and labels (uint8, LABELS)."""

    images: Mapping[str, NDArray[np.float32]]
    labels: NDArray[np.uint8]
    grid: NativeGrid


def write_segmentation_task(
    out: str | Path,
    *,
    cases: int = 24,
    seed: int = 0,
    voxel_mm: float = 2.0,
    channels: Sequence[str] = ("T1w", "FLAIR"),
) -> Path:
    """Write the lesion segmentation task as an nnU-Net v2 raw dataset; returns ``out``.

    ``out/imagesTr/lesions_{i:03d}_{k:04d}.nii.gz`` (channel k), ``out/labelsTr/lesions_{i:03d}
    .nii.gz`` and ``out/dataset.json``. Existing files of the same names are overwritten.
    """
    _check_arguments(cases, voxel_mm, channels)
    root = Path(out)
    for i in range(cases):
        case = f"lesions_{i:03d}"
        rendered = render_case(case_spec("segmentation", i, seed=seed, voxel_mm=voxel_mm), channels)
        affine = rendered.grid.affine
        for k, channel in enumerate(channels):
            image = rendered.images[channel]
            save_nifti(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", image, affine, "float32", True)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", rendered.labels, affine, "uint8", True)
    description = {
        "name": "SyntheticLesions",
        "description": (
            "Synthetic white-matter lesions on the openmind-toolkit head phantom: lesion cores "
            "dark on T1w and bright on FLAIR, a perilesional rim mildly bright on FLAIR "
            f"(seed {seed}, {voxel_mm:g} mm voxels)."
        ),
        "channel_names": {str(k): channel for k, channel in enumerate(channels)},
        "labels": LABELS,
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "licence": "CC-BY-4.0",
        "reference": "synthetic (openmind-toolkit)",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    log.info("wrote %d segmentation cases to %s", cases, root)
    return root


def write_classification_task(
    out: str | Path, *, cases: int = 24, seed: int = 0, voxel_mm: float = 2.0
) -> Path:
    """Write the healthy/lesions classification task; returns the path of its ``labels.csv``.

    FLAIR images go to ``out/images/subject_{i:03d}.nii.gz``; the CSV lists each image, relative
    to the CSV's folder, and its label from :data:`CLASSES` (healthy and lesions alternate, so an
    odd number of cases has one healthy case more).
    """
    _check_arguments(cases, voxel_mm, ("FLAIR",))
    root = Path(out)
    rows = []
    for i in range(cases):
        rel = f"images/subject_{i:03d}.nii.gz"
        rendered = render_case(
            case_spec("classification", i, seed=seed, voxel_mm=voxel_mm), ("FLAIR",)
        )
        save_nifti(root / rel, rendered.images["FLAIR"], rendered.grid.affine, "float32", True)
        rows.append({"image": rel, "label": CLASSES[i % 2]})
    path = root / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d classification cases to %s", cases, root)
    return path


def case_spec(task: TaskKind, index: int, *, seed: int, voxel_mm: float) -> CaseSpec:
    """The parameters of case ``index`` of a task, as the writers draw them."""
    rng = np.random.default_rng(seed_for(seed, f"finetune/{task}/{index}"))
    least, most = _LESIONS_PER_CASE[task]
    healthy = task == "classification" and CLASSES[index % 2] == "healthy"
    count = 0 if healthy else int(rng.integers(least, most + 1))
    return draw_case(rng, plan_grid((voxel_mm, voxel_mm, voxel_mm), "RAS"), count)


def draw_case(rng: np.random.Generator, grid: NativeGrid, lesions: int) -> CaseSpec:
    """A random case on ``grid`` with ``lesions`` lesions."""
    pose = subject_transform(rng)
    centres = _lesion_centres(phantom_resolution(grid))
    drawn = tuple(
        Lesion(
            centre=_triple(centres[rng.integers(len(centres))]),
            semi_axes=_triple(rng.uniform(*_SEMI_AXES_MM, size=3)),
            rotation=_random_rotation(rng),
            severity=float(rng.uniform()),
        )
        for _ in range(lesions)
    )
    rim_voxels = int(rng.integers(1, 3))
    rim_severity = float(rng.uniform())
    # Drawn for every channel, in a fixed order, so a channel's look does not depend on which
    # other channels a task asks for.
    acquisitions = {
        channel: Acquisition(
            gamma=float(rng.uniform(0.85, 1.15)),
            scale=float(1000.0 * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
            bias=float(rng.uniform(0.1, 0.5)),
            snr=float(rng.uniform(15.0, 35.0)),
        )
        for channel in CHANNELS
    }
    return CaseSpec(
        grid=grid,
        pose=pose,
        lesions=drawn,
        rim_voxels=rim_voxels,
        rim_severity=rim_severity,
        acquisitions=acquisitions,
        noise_seed=int(rng.integers(2**63)),
    )


def render_case(spec: CaseSpec, channels: Sequence[str] = ("T1w", "FLAIR")) -> RenderedCase:
    """The case's images in ``channels`` and its labels; the same spec gives the same arrays."""
    _check_channels(channels)
    resolution = phantom_resolution(spec.grid)
    phantom = head_phantom(resolution)
    codes = sample_phantom(label_codes(resolution), phantom, spec.grid, spec.pose, order=0)
    brain = codes >= BRAIN_FLAG
    core, severity = _lesion_cores(spec, brain)
    rim = np.zeros_like(core)
    if core.any():
        rim = ndimage.binary_dilation(core, iterations=spec.rim_voxels) & brain & ~core
    labels = (LABELS["lesion"] * core + LABELS["perilesional"] * rim).astype(np.uint8)

    images = {}
    for channel in channels:
        clean = sample_phantom(
            tissue_image(resolution, channel), phantom, spec.grid, spec.pose, order=1
        ).astype(np.float32)
        acquisition = spec.acquisitions[channel]
        # The noise level comes from the head without lesions, so that lesions change nothing
        # outside themselves.
        reference = float(np.percentile(clean[brain], 95)) if brain.any() else 1.0
        sigma = reference**acquisition.gamma * acquisition.scale / acquisition.snr
        white = CONTRASTS[channel][Tissue.WM]
        (core_least, core_most), rim_range = _LESION_CONTRAST[channel]
        image = clean.copy()
        image[core] = white * (core_least + severity[core] * (core_most - core_least))
        if rim_range is not None:
            image[rim] = white * (rim_range[0] + spec.rim_severity * (rim_range[1] - rim_range[0]))
        rng = np.random.default_rng(seed_for(spec.noise_seed, channel))
        field = bias_field(image.shape, rng, acquisition.bias)
        image = (image**acquisition.gamma * acquisition.scale * field).astype(np.float32)
        images[channel] = rician(image, sigma, rng)
    return RenderedCase(images=images, labels=labels, grid=spec.grid)


def _lesion_cores(
    spec: CaseSpec, brain: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """The union of the lesions inside the brain, and each core voxel's severity (the lesion
    drawn last wins where lesions overlap)."""
    core = np.zeros(spec.grid.shape, dtype=bool)
    severity = np.zeros(spec.grid.shape, dtype=np.float32)
    if not spec.lesions:
        return core, severity
    world = world_coordinates(spec.grid, spec.pose)
    to_index = np.linalg.inv(spec.pose @ spec.grid.affine)
    for lesion in spec.lesions:
        centre = np.asarray(lesion.centre, dtype=np.float32)
        offsets = world - centre[:, None, None, None]
        local = np.tensordot(lesion.rotation.T.astype(np.float32), offsets, axes=1)
        axes = np.asarray(lesion.semi_axes, dtype=np.float32)[:, None, None, None]
        inside = ((local / axes) ** 2).sum(axis=0) <= 1.0
        # The voxel nearest the centre always belongs to the lesion, so a lesion that falls
        # between voxel centres on a coarse grid is not lost.
        nearest = np.rint(to_index[:3, :3] @ np.asarray(lesion.centre) + to_index[:3, 3])
        if all(0 <= v < n for v, n in zip(nearest, spec.grid.shape, strict=True)):
            inside[tuple(int(v) for v in nearest)] = True
        inside &= brain
        core |= inside
        severity[inside] = lesion.severity
    return core, severity


@lru_cache(maxsize=2)
def _lesion_centres(resolution: int) -> NDArray[np.float64]:
    """Phantom-frame millimetres of the white-matter voxels deep enough to centre a lesion."""
    phantom = head_phantom(resolution)
    brain = (phantom.gm + phantom.wm + phantom.csf) > 0.5
    depth = ndimage.distance_transform_edt(brain, sampling=phantom.resolution)
    index = np.argwhere((phantom.labels == Tissue.WM) & brain & (depth >= _CENTRE_DEPTH_MM))
    centres: NDArray[np.float64] = index @ phantom.affine[:3, :3].T + phantom.affine[:3, 3]
    return centres


def _random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    """A rotation drawn uniformly (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    rotation: NDArray[np.float64] = q
    return rotation


def _triple(values: NDArray[np.float64]) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _check_arguments(cases: int, voxel_mm: float, channels: Sequence[str]) -> None:
    if cases < 2:
        raise ConfigError(f"cases must be at least 2, got {cases}")
    if not 0 < voxel_mm <= MAX_VOXEL_MM:
        raise ConfigError(
            f"voxel_mm must be in (0, {MAX_VOXEL_MM:g}] mm, got {voxel_mm}: coarser voxels "
            f"would not resolve lesions {2 * _SEMI_AXES_MM[0]:g} mm across"
        )
    _check_channels(channels)


def _check_channels(channels: Sequence[str]) -> None:
    if isinstance(channels, str):
        raise ConfigError(f"channels must be a sequence of names, got the string {channels!r}")
    if not channels:
        raise ConfigError(f"channels must name at least one of {list(CHANNELS)}")
    unknown = [channel for channel in channels if channel not in CHANNELS]
    if unknown:
        raise ConfigError(f"channels {unknown} cannot be rendered; choose from {list(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise ConfigError(f"channels must not repeat a name, got {list(channels)}")
