"""Small diffusion phantoms for the DWI tests: tensor fields whose FA, MD and fibre paths are
known, turned into signals on a real gradient scheme from dipy's data files."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_data.synth.diffusion import gradient_scheme


def tensor(parallel: float, perpendicular: float, direction: NDArray[Any]) -> NDArray[Any]:
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    return perpendicular * np.eye(3) + (parallel - perpendicular) * np.outer(d, d)


def ring_phantom(shape: tuple[int, int, int] = (32, 32, 12)) -> NDArray[np.float64]:
    """Tensors (x, y, z, 3, 3): a ring-shaped bundle in the x-y plane running along the ring,
    in grey-matter-like tissue, inside a box of water-free background (zero tensors)."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    cx, cy, cz = (n / 2 - 0.5 for n in shape)
    radius = np.hypot(x - cx, y - cy)
    in_ring = np.hypot(radius - 9.0, z - cz) <= 2.2
    tangent = np.stack([-(y - cy), x - cx, np.zeros_like(x)], axis=-1)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=-1, keepdims=True), 1e-9)
    grey = tensor(0.9e-3, 0.75e-3, [1.0, 0.0, 0.0])
    field = np.broadcast_to(grey, (*shape, 3, 3)).copy()
    outer = tangent[..., :, None] * tangent[..., None, :]
    fibre = 0.3e-3 * np.eye(3) + (1.6e-3 - 0.3e-3) * outer
    field[in_ring] = fibre[in_ring]
    return field


def signals(
    tensors: NDArray[np.float64],
    scheme: str = "small_64D",
    *,
    s0: float = 1000.0,
    snr: float | None = 50.0,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Rician-noisy signals S0 exp(-b g'Dg) (``snr`` at b=0; None for none), b-values, b-vectors."""
    bvals, bvecs = gradient_scheme(scheme)
    quadratic = np.einsum("vi,...ij,vj->...v", bvecs, tensors, bvecs)
    clean = s0 * np.exp(-bvals * quadratic)
    if snr is None:
        return clean.astype(np.float32), bvals, bvecs
    rng = np.random.default_rng(seed)
    sigma = s0 / snr
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
    return noisy.astype(np.float32), bvals, bvecs


def fa_md(tensors: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    values = np.linalg.eigvalsh(tensors)
    md = values.mean(axis=-1)
    norm = np.sqrt((values**2).sum(axis=-1))
    fa = np.sqrt(1.5 * ((values - md[..., None]) ** 2).sum(axis=-1)) / np.where(norm > 0, norm, 1)
    return fa, md
