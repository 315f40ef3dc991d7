"""Reading, checking and selecting a diffusion series' gradient table.

Each check that fails raises :class:`~openmind_data.errors.InvalidInputError` with the reason code
the exclusion table uses and a detail that names the offending volume, so a curator can fix the
file. What is repaired rather than refused (b-vectors a little off unit length, trace-weighted
volumes without a direction) is said in :attr:`Gradients.repairs` for the provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from openmind_data.crawl.textfiles import read_text
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R

__all__ = [
    "MAX_BVAL",
    "Gradients",
    "Selection",
    "count_directions",
    "design_rank",
    "read_gradients",
    "select_volumes",
    "validate_gradients",
]

#: Largest b-value (s/mm^2) taken as plausible for a human head; beyond it a file is more likely
#: in other units or corrupt than from a Connectom-class scanner.
MAX_BVAL = 20_000.0
#: Largest deviation of a b-vector's length from one that is renormalised rather than refused.
UNIT_TOLERANCE = 0.1
#: b-values closer than this (s/mm^2) belong to one shell.
SHELL_TOLERANCE = 100.0
#: Directions closer than this (degrees, up to sign) count as one direction.
SAME_DIRECTION_DEGREES = 2.0


@dataclass(frozen=True)
class Gradients:
    """A checked gradient table: b-values (s/mm^2) and b-vectors (N, 3), unit for DW volumes."""

    bvals: NDArray[np.float64]
    bvecs: NDArray[np.float64]
    b0_threshold: float
    usable: NDArray[np.bool_]  # volumes that may be used at all
    repairs: tuple[str, ...] = ()

    @property
    def is_b0(self) -> NDArray[np.bool_]:
        return (self.bvals <= self.b0_threshold) & self.usable

    @property
    def is_dw(self) -> NDArray[np.bool_]:
        return (self.bvals > self.b0_threshold) & self.usable

    def shells(self) -> list[float]:
        """Centres of the diffusion-weighted shells, ascending."""
        return [centre for centre, _ in _shells(self.bvals[self.is_dw])]


@dataclass(frozen=True)
class Selection:
    """The volumes a tensor fit uses: every b0 plus the chosen shells."""

    volumes: NDArray[np.intp]
    shells: tuple[float, ...]
    fallback: bool  # no shell at or under the threshold: the lowest one was taken
    directions: int  # distinct directions among the chosen DW volumes
    rank: int  # rank of their tensor design (6 when a tensor is determined)


def read_gradients(
    bval_path: str | Path, bvec_path: str | Path
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """b-values (N,) and b-vectors (N, 3) from FSL-style text files (``.bvec`` as 3 rows, or
    as N rows of 3)."""
    bvals = _numbers(bval_path)
    if bvals.ndim == 2 and 1 in bvals.shape:
        bvals = bvals.reshape(-1)
    if bvals.ndim != 1:
        raise InvalidInputError(bval_path, R.INVALID_GRADIENTS, "b-values are not one row")
    bvecs = _numbers(bvec_path, finite=False)  # b0 rows may be NaN: checked with the b-values
    if bvecs.ndim == 2 and bvecs.shape[0] == 3:
        bvecs = bvecs.T
    elif bvecs.ndim != 2 or bvecs.shape[1] != 3:
        raise InvalidInputError(
            bvec_path, R.INVALID_GRADIENTS, f"b-vectors are {bvecs.shape}, not 3 x N or N x 3"
        )
    return bvals, np.ascontiguousarray(bvecs)


def _numbers(path: str | Path, *, finite: bool = True) -> NDArray[np.float64]:
    text = read_text(path)
    try:
        rows = [[float(v) for v in line.split()] for line in text.splitlines() if line.strip()]
    except ValueError as error:
        raise InvalidInputError(path, R.INVALID_GRADIENTS, f"not numbers: {error}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise InvalidInputError(path, R.INVALID_GRADIENTS, "empty, or rows of unequal length")
    values = np.array(rows, dtype=np.float64)
    if finite and not np.isfinite(values).all():
        raise InvalidInputError(path, R.INVALID_GRADIENTS, "holds NaN or infinite values")
    return values


def validate_gradients(
    bvals: NDArray[np.float64],
    bvecs: NDArray[np.float64],
    n_volumes: int,
    *,
    where: str | Path,
    b0_threshold: float = 50.0,
) -> Gradients:
    """Check a gradient table against its series of ``n_volumes`` volumes (``where`` names the
    series in errors).

    Refused: counts that differ from the volumes; negative or implausibly large b-values, or
    b-values that look like ms/um^2 rather than s/mm^2; no b0; a DW volume whose b-vector is far
    from unit length. Repaired: b-vectors within :data:`UNIT_TOLERANCE` of unit length are
    renormalised; DW volumes with a zero b-vector (trace-weighted images some scanners append)
    are left out of every fit.
    """
    if len(bvals) != n_volumes or len(bvecs) != n_volumes:
        raise InvalidInputError(
            where,
            R.GRADIENT_MISMATCH,
            f"{len(bvals)} b-values and {len(bvecs)} b-vectors for {n_volumes} volumes",
        )
    if not np.isfinite(bvals).all():
        raise InvalidInputError(where, R.INVALID_GRADIENTS, "b-values hold NaN or infinity")
    if (bvals < 0).any():
        first = int(np.flatnonzero(bvals < 0)[0])
        raise InvalidInputError(
            where, R.INVALID_GRADIENTS, f"negative b-value {bvals[first]:g} at volume {first}"
        )
    top = float(bvals.max())
    if top > MAX_BVAL:
        raise InvalidInputError(
            where,
            R.INVALID_GRADIENTS,
            f"b-value {top:g} s/mm^2 is beyond the plausible {MAX_BVAL:g}",
        )
    if 0 < top <= 10:
        raise InvalidInputError(
            where,
            R.INVALID_GRADIENTS,
            f"largest b-value is {top:g}: looks like ms/um^2, expected s/mm^2 (x1000)",
        )
    is_b0 = bvals <= b0_threshold
    if not is_b0.any():
        raise InvalidInputError(
            where,
            R.NO_B0,
            f"no volume with b <= {b0_threshold:g} s/mm^2 (lowest b-value {bvals.min():g})",
        )
    repairs: list[str] = []
    broken = ~np.all(np.isfinite(bvecs), axis=1, keepdims=False).reshape(-1)
    if (broken & ~is_b0).any():
        first = int(np.flatnonzero(broken & ~is_b0)[0])
        raise InvalidInputError(
            where,
            R.INVALID_GRADIENTS,
            f"b-vector of volume {first} (b={bvals[first]:g}) is not finite",
        )
    if broken.any():
        bvecs = np.where(broken[:, None], 0.0, bvecs)
        repairs.append(f"set {int(broken.sum())} non-finite b-vector(s) of b0 volumes to zero")
    norms = np.linalg.norm(bvecs, axis=1)
    usable = np.ones(n_volumes, dtype=bool)
    trace = ~is_b0 & (norms < 1e-6)
    if trace.any():
        usable &= ~trace
        repairs.append(
            f"left out {int(trace.sum())} diffusion-weighted volume(s) with a zero b-vector "
            f"(trace-weighted images): {np.flatnonzero(trace).tolist()}"
        )
    off = ~is_b0 & ~trace & (np.abs(norms - 1.0) > 1e-3)
    far = off & (np.abs(norms - 1.0) > UNIT_TOLERANCE)
    if far.any():
        first = int(np.flatnonzero(far)[0])
        raise InvalidInputError(
            where,
            R.INVALID_GRADIENTS,
            f"b-vector of volume {first} (b={bvals[first]:g}) has length {norms[first]:.3f}, not 1",
        )
    # b0 rows stay as given: a low b-value (b=5, b=15) still weighs along its vector in the fit.
    unit = bvecs.copy()
    dw = ~is_b0 & ~trace
    unit[dw] = bvecs[dw] / norms[dw, None]
    if off.any():
        repairs.append(f"renormalised {int(off.sum())} b-vector(s) to unit length")
    return Gradients(bvals, unit, b0_threshold, usable, tuple(repairs))


def select_volumes(gradients: Gradients, max_bval: float) -> Selection:
    """Every b0 plus the DW shells whose centre is at most ``max_bval``; when no shell is, the
    lowest shell alone (a b=2000 single-shell series still gets a tensor)."""
    dw = np.flatnonzero(gradients.is_dw)
    b0 = np.flatnonzero(gradients.is_b0)
    shells = _shells(gradients.bvals[dw])
    chosen = [(c, members) for c, members in shells if c <= max_bval]
    fallback = bool(shells) and not chosen
    if fallback:
        chosen = shells[:1]
    picked = np.sort(np.concatenate([dw[m] for _, m in chosen])) if chosen else dw[:0]
    return Selection(
        volumes=np.sort(np.concatenate([b0, picked])),
        shells=tuple(c for c, _ in chosen),
        fallback=fallback,
        directions=count_directions(gradients.bvecs[picked]),
        rank=design_rank(gradients.bvecs[picked]),
    )


def _shells(bvals: NDArray[np.float64]) -> list[tuple[float, NDArray[np.intp]]]:
    """(centre, member positions) per shell: sorted values split where a gap exceeds the
    tolerance. Centres are medians rounded to 10 s/mm^2."""
    if bvals.size == 0:
        return []
    order = np.argsort(bvals, kind="stable")
    ordered = bvals[order]
    cuts = np.flatnonzero(np.diff(ordered) > SHELL_TOLERANCE) + 1
    return [
        (float(np.round(np.median(bvals[group]), -1)), np.sort(group))
        for group in np.split(order, cuts)
    ]


def count_directions(bvecs: NDArray[np.float64]) -> int:
    """Distinct directions among unit vectors, up to sign (a direction and its opposite are
    one), within :data:`SAME_DIRECTION_DEGREES`."""
    limit = np.cos(np.deg2rad(SAME_DIRECTION_DEGREES))
    distinct: list[NDArray[np.float64]] = []
    for v in bvecs:
        if all(abs(float(v @ d)) < limit for d in distinct):
            distinct.append(v)
    return len(distinct)


def design_rank(bvecs: NDArray[np.float64]) -> int:
    """Rank of the six-column tensor design of unit vectors: six when they determine a tensor
    (six distinct directions can still fail, e.g. when all lie in one plane)."""
    if len(bvecs) == 0:
        return 0
    x, y, z = bvecs.T
    design = np.stack([x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
    return int(np.linalg.matrix_rank(design))
