"""Diffusion-weighted series simulated from tensor fields with known FA and MD.

Gradient schemes are real ones that ship inside dipy's wheel (``dipy/data/files``). Each voxel's
tensor is the partial-volume mix of its tissues' tensors, so the noise-free signal is exactly a
single-tensor signal and the truth FA/MD maps are exact. White matter has a smoothly turning
principal direction. The b-vectors are written in voxel space (FSL/BIDS convention for the
written orientation); FA and MD do not depend on that convention, orientation-sensitive tools do.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_data.synth.artifacts import bias_field, rician
from openmind_data.synth.geometry import NativeGrid
from openmind_data.synth.render import (
    BRAIN_FLAG,
    label_codes,
    phantom_resolution,
    sample_phantom,
    world_coordinates,
)
from openmind_data.templates import Tissue, head_phantom

__all__ = ["SCHEMES", "DiffusionSeries", "gradient_scheme", "simulate_dwi"]

#: Scheme name -> how to read it from dipy's data files.
SCHEMES = {
    "small_64D": "single shell, b=1000, 64 directions",
    "small_25": "single shell, b=2000, 25 directions",
    "gtab_3shell": "three shells, b=1000/2000/3500, 193 volumes",
    "gtab_isbi2013_2shell": "two shells, b=1500/2500, 64 volumes",
}

# (parallel, perpendicular) diffusivity in mm^2/s and b=0 signal, per tissue.
_TENSORS: dict[Tissue, tuple[float, float, float]] = {
    Tissue.CSF: (3.0e-3, 3.0e-3, 1.00),
    Tissue.GM: (1.0e-3, 0.72e-3, 0.60),
    Tissue.WM: (1.55e-3, 0.35e-3, 0.45),
    Tissue.BONE: (0.3e-3, 0.3e-3, 0.02),
    Tissue.FAT: (0.1e-3, 0.1e-3, 0.08),  # fat suppressed
    Tissue.MUSCLE: (2.0e-3, 1.3e-3, 0.30),
    Tissue.EYE: (2.9e-3, 2.9e-3, 0.95),
    Tissue.CARTILAGE: (1.2e-3, 1.2e-3, 0.25),
}


def _dipy_file(name: str) -> str:
    return str(files("dipy.data") / "files" / name)


def gradient_scheme(name: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """b-values (s/mm^2) and unit b-vectors (N, 3) of a scheme shipped with dipy."""
    if name not in SCHEMES:
        raise ValueError(f"unknown gradient scheme {name!r}; choose from {sorted(SCHEMES)}")
    if name.startswith("gtab_"):
        scaled = np.loadtxt(_dipy_file(f"{name}.txt"), delimiter=",")
        bvals = np.linalg.norm(scaled, axis=1)
        bvecs = np.divide(
            scaled, bvals[:, None], out=np.zeros_like(scaled), where=bvals[:, None] > 0
        )
        return np.round(bvals, -1), bvecs
    bvals = np.loadtxt(_dipy_file(f"{name}.bval"))
    bvecs = np.loadtxt(_dipy_file(f"{name}.bvec"))
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:  # FSL layout: one row per axis
        bvecs = bvecs.T
    norms = np.linalg.norm(bvecs, axis=1)
    bvecs = np.divide(bvecs, norms[:, None], out=np.zeros_like(bvecs), where=norms[:, None] > 0)
    return bvals, bvecs


@dataclass(frozen=True)
class DiffusionSeries:
    data: NDArray[np.float32]  # (x, y, z, volumes)
    bvals: NDArray[np.float64]
    bvecs: NDArray[np.float64]  # (volumes, 3), voxel space
    fa: NDArray[np.float32]  # truth, in the series' grid
    md: NDArray[np.float32]
    brain: NDArray[np.uint8]
    head: NDArray[np.uint8]
    sigma: float  # noise standard deviation of the real and imaginary channels


def simulate_dwi(
    grid: NativeGrid,
    pose: NDArray[np.float64],
    scheme: str,
    rng: np.random.Generator,
    *,
    snr: float = 30.0,
    table: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
) -> DiffusionSeries:
    """A DWI series of the posed phantom in ``grid``; ``snr`` is b=0 white-matter SNR.

    ``table`` (b-values, unit b-vectors) replaces the named scheme when given."""
    bvals, bvecs = gradient_scheme(scheme) if table is None else table
    resolution = phantom_resolution(grid)
    phantom = head_phantom(resolution)
    fractions = {
        Tissue.GM: sample_phantom(phantom.gm, phantom, grid, pose, order=1),
        Tissue.WM: sample_phantom(phantom.wm, phantom, grid, pose, order=1),
        Tissue.CSF: sample_phantom(phantom.csf, phantom, grid, pose, order=1),
    }
    codes = sample_phantom(label_codes(resolution), phantom, grid, pose, order=0)
    brain = codes >= BRAIN_FLAG
    tissue = codes % BRAIN_FLAG
    head = tissue != Tissue.AIR
    for t in (Tissue.GM, Tissue.WM, Tissue.CSF):
        fractions[t] = np.where(brain, fractions[t], 0.0)
    total = sum(fractions.values())
    brain_norm = np.where(total > 0, total, 1.0)
    for t in (Tissue.GM, Tissue.WM, Tissue.CSF):
        fractions[t] = np.where(brain, fractions[t] / brain_norm, 0.0)
    for t in (Tissue.BONE, Tissue.FAT, Tissue.MUSCLE, Tissue.EYE, Tissue.CARTILAGE):
        fractions[t] = ((tissue == t) & ~brain).astype(np.float32)
    # Outside the brain, CSF labels (the subarachnoid shell) are pure CSF.
    fractions[Tissue.CSF] = np.where(~brain & (tissue == Tissue.CSF), 1.0, fractions[Tissue.CSF])

    direction = _fibre_direction(world_coordinates(grid, pose), np.linalg.inv(grid.affine[:3, :3]))
    tensor = np.zeros((*grid.shape, 3, 3), dtype=np.float64)
    s0 = np.zeros(grid.shape, dtype=np.float64)
    eye = np.eye(3)
    for t, f in fractions.items():
        parallel, perpendicular, b0_signal = _TENSORS[t]
        s0 += f * b0_signal
        if t in (Tissue.WM, Tissue.MUSCLE):
            outer = direction[..., :, None] * direction[..., None, :]
            tensor += f[..., None, None] * (
                perpendicular * eye + (parallel - perpendicular) * outer
            )
        else:
            tensor += f[..., None, None] * (np.diag([parallel, perpendicular, perpendicular]))

    inside = tensor[head]  # only voxels with signal need a tensor
    eigenvalues = np.linalg.eigvalsh(inside)
    md = np.zeros(grid.shape, dtype=np.float32)
    fa = np.zeros(grid.shape, dtype=np.float32)
    md[head] = eigenvalues.mean(axis=1)
    deviation = eigenvalues - eigenvalues.mean(axis=1, keepdims=True)
    norm = np.sqrt((eigenvalues**2).sum(axis=1))
    fa[head] = np.sqrt(1.5 * (deviation**2).sum(axis=1)) / np.where(norm > 0, norm, 1.0)

    # Signal S0 * exp(-b g^T D g) for all volumes at once: g^T D g is linear in D's six
    # independent elements, so it is one (voxels x 6) @ (6 x volumes) product.
    g = bvecs
    design = np.stack(
        [
            g[:, 0] ** 2,
            g[:, 1] ** 2,
            g[:, 2] ** 2,
            2 * g[:, 0] * g[:, 1],
            2 * g[:, 0] * g[:, 2],
            2 * g[:, 1] * g[:, 2],
        ]
    )
    elements = np.stack(
        [
            inside[:, 0, 0],
            inside[:, 1, 1],
            inside[:, 2, 2],
            inside[:, 0, 1],
            inside[:, 0, 2],
            inside[:, 1, 2],
        ],
        axis=1,
    )
    signal = np.zeros((*grid.shape, len(bvals)), dtype=np.float32)
    signal[head] = (s0[head][:, None] * np.exp(-bvals * (elements @ design))).astype(np.float32)
    signal *= bias_field(grid.shape, rng, 0.2)[..., None]
    white = fractions[Tissue.WM] > 0.9
    reference = float(s0[white].mean()) if white.any() else float(s0[head].mean())
    sigma = reference / snr
    data = rician(signal.astype(np.float32), sigma, rng)
    return DiffusionSeries(
        data=data,
        bvals=bvals,
        bvecs=bvecs,
        fa=fa,
        md=md,
        brain=brain.astype(np.uint8),
        head=head.astype(np.uint8),
        sigma=sigma,
    )


def _fibre_direction(
    world: NDArray[np.float32], to_voxel: NDArray[np.floating[Any]]
) -> NDArray[np.float64]:
    """A smooth unit vector field (world frame), expressed along the voxel axes."""
    x, y, z = (w.astype(np.float64) for w in world)
    theta = np.pi * x / 90.0 + np.pi * z / 140.0
    phi = 0.5 * np.pi + 0.6 * np.sin(np.pi * y / 80.0)
    field = np.stack(
        [np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=-1
    )
    voxel: NDArray[np.float64] = (field @ to_voxel.T).astype(np.float64)
    voxel /= np.linalg.norm(voxel, axis=-1, keepdims=True)
    return voxel
