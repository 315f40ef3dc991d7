"""What a scanner adds to an ideal image: bias fields, Rician noise, and graded degradations.

Each function takes its random numbers from the generator it is given, so every image can be
replayed from its seed. Degradations have an integer severity (0 = none, 1..3 = mild..severe);
:data:`DEGRADATIONS` holds the physical parameter behind each level, and the ground truth records
both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "DEGRADATIONS",
    "apply_degradation",
    "bias_field",
    "rician",
]

FloatArray = NDArray[np.float32]

#: Severity level -> parameter, per degradation type.
#: noise: multiplier of the noise standard deviation; blur: Gaussian sigma in voxels;
#: bias: log peak-to-peak amplitude added to the image's own bias field (the same field, made
#: stronger, so severity orders non-uniformity whatever the field's shape); ghosting: relative
#: intensity of an N/2 ghost along the phase-encode axis; motion: share of the outer k-space
#: lines with random phase errors.
DEGRADATIONS: Mapping[str, tuple[float, ...]] = {
    "noise": (1.0, 2.0, 3.5, 6.0),
    "blur": (0.0, 0.7, 1.3, 2.2),
    "bias": (0.0, 0.6, 1.2, 2.0),
    "ghosting": (0.0, 0.08, 0.18, 0.35),
    "motion": (0.0, 0.08, 0.2, 0.4),
}


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float) -> FloatArray:
    """A smooth multiplicative field, exp of a random quadratic, with log range ``amplitude``."""
    axes = np.ix_(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape[:3]))
    coefficients = rng.normal(size=9)
    x, y, z = axes
    terms = (x, y, z, x * x, y * y, z * z, x * y, y * z, x * z)
    log_field = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    log_field = np.broadcast_to(log_field, shape[:3]).astype(np.float32)
    spread = float(log_field.max() - log_field.min()) or 1.0
    log_field = (log_field - log_field.mean()) * (amplitude / spread)
    field: FloatArray = np.exp(log_field).astype(np.float32)
    return field


def rician(signal: FloatArray, sigma: float, rng: np.random.Generator) -> FloatArray:
    """Magnitude of the signal plus complex Gaussian noise: Rician inside, Rayleigh in air."""
    real = rng.standard_normal(size=signal.shape, dtype=np.float32)
    real *= sigma
    real += signal
    imag = rng.standard_normal(size=signal.shape, dtype=np.float32)
    imag *= sigma
    return np.hypot(real, imag, out=real)


def apply_degradation(
    image: FloatArray,
    kind: str,
    severity: int,
    rng: np.random.Generator,
    *,
    phase_axis: int,
) -> FloatArray:
    """Apply a degradation other than noise and bias, which scale the Rician sigma and the
    image's own bias field (see DEGRADATIONS) and are left to the renderer."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose from {sorted(DEGRADATIONS)}")
    level = DEGRADATIONS[kind][severity]
    if severity == 0 or kind in ("noise", "bias"):
        return image
    if kind == "blur":
        return ndimage.gaussian_filter(image, level).astype(np.float32)  # type: ignore[no-any-return]
    if kind == "ghosting":
        ghost = np.roll(image, image.shape[phase_axis] // 2, axis=phase_axis)
        return (image + level * ghost).astype(np.float32)
    return _motion(image, level, rng, phase_axis)


def _motion(
    image: FloatArray, fraction: float, rng: np.random.Generator, phase_axis: int
) -> FloatArray:
    """Rigid jumps during acquisition: random phase ramps on a share of phase-encode lines."""
    k = np.fft.fftshift(np.fft.fftn(image), axes=phase_axis)
    n = image.shape[phase_axis]
    # Motion late in the scan hits the outer k-space lines; the central eighth stays intact.
    # A permutation's prefix: with the same generator, a more severe case corrupts a superset.
    centre = n // 16
    outer = np.concatenate([np.arange(0, n // 2 - centre), np.arange(n // 2 + centre + 1, n)])
    lines = rng.permutation(outer)[: max(1, round(fraction * outer.size))]
    freq_axis = (phase_axis + 1) % 3
    freqs = np.fft.fftshift(np.fft.fftfreq(image.shape[freq_axis]))
    shape = [1, 1, 1]
    shape[freq_axis] = -1
    for line in lines:
        shift = rng.uniform(-4.0, 4.0)  # voxels of displacement along the readout
        ramp = np.exp(-2j * np.pi * freqs * shift).reshape(shape)
        index = [slice(None)] * 3
        index[phase_axis] = slice(int(line), int(line) + 1)
        k[tuple(index)] *= ramp
    k = np.fft.ifftshift(k, axes=phase_axis)
    return np.abs(np.fft.ifftn(k)).astype(np.float32)
