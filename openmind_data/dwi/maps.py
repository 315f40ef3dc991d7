"""From a 4D diffusion series to FA, MD and mean-b0 arrays, without copying the series around.

Memory. The series is read once in its on-disk type (int16 for most scanners: half the bytes of
float32) and never scaled as a whole. The mean b0 sums one volume at a time; the tensor is fitted
slab by slab along the last spatial axis, each slab's masked voxels converted to float as they
are fitted. Peak use is the series plus a slab, about 1.1 copies. Denoising and Gibbs-ringing
removal need the selected volumes as floats at once: with either on, peak use is about two
copies of the series (three during MP-PCA, whose output is a new array).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from openmind_data.dwi.gradients import Gradients, Selection
from openmind_data.dwi.options import DwiOptions
from openmind_data.dwi.orientation import OrientationCheck, check_orientation
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R

__all__ = ["DwiMaps", "Step", "compute_maps", "load_series", "software"]


@dataclass(frozen=True)
class Step:
    """One provenance entry: what was done, how, with which parameters."""

    step: str
    method: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class DwiMaps:
    """The stage's arrays, all in the series' grid; ``fa``/``md`` are None without a tensor."""

    mean_b0: NDArray[np.float32]
    mask: NDArray[np.bool_]
    fa: NDArray[np.float32] | None
    md: NDArray[np.float32] | None
    orientation: OrientationCheck | None
    steps: list[Step]
    seconds: dict[str, float]


def software() -> str:
    return "; ".join(f"{name} {version(name)}" for name in ("dipy", "nibabel", "numpy"))


def load_series(path: str | Path) -> tuple[Any, NDArray[Any], float, float]:
    """The image, its voxels in their on-disk type, and the scaling (slope, intercept)."""
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for a bad header
        raise InvalidInputError(
            path, R.UNREADABLE_HEADER, f"nibabel cannot read it: {error}"
        ) from error
    if len(image.shape) != 4:
        raise InvalidInputError(
            path, R.TOO_FEW_DIMENSIONS, f"a diffusion series must be 4D, this is {image.shape}"
        )
    try:
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except (OSError, EOFError, ValueError) as error:
        raise InvalidInputError(path, R.TRUNCATED, f"voxel data cannot be read: {error}") from error
    slope, inter = image.dataobj.slope, image.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return image, raw, slope, inter


def compute_maps(
    raw: NDArray[Any],
    slope: float,
    inter: float,
    spacing: tuple[float, ...],
    gradients: Gradients,
    selection: Selection,
    options: DwiOptions,
    *,
    where: str,
    mask: NDArray[np.bool_] | None = None,
) -> DwiMaps:
    """Mean b0, foreground mask and (with enough directions) the tensor maps of a series."""
    seconds: dict[str, float] = {}
    steps: list[Step] = []
    clock = time.perf_counter()

    mean_b0 = _mean_volume(raw, np.flatnonzero(gradients.is_b0), slope, inter, where)
    seconds["mean_b0"] = time.perf_counter() - clock
    steps.append(
        Step(
            "mean_b0",
            "mean",
            {
                "volumes": np.flatnonzero(gradients.is_b0).tolist(),
                "b0_threshold": gradients.b0_threshold,
            },
        )
    )

    clock = time.perf_counter()
    if mask is None:
        mask = _foreground(mean_b0, options)
        steps.append(Step("mask", "median_otsu", dict(options.median_otsu)))
    else:
        steps.append(Step("mask", "given", {"voxels": int(mask.sum())}))
    if not mask.any():
        raise InvalidInputError(where, R.EMPTY_IMAGE, "the foreground mask of the mean b0 is empty")
    seconds["mask"] = time.perf_counter() - clock

    fits = selection.rank == 6 and selection.directions >= 6
    if not fits:
        return DwiMaps(mean_b0, mask, None, None, None, steps, seconds)

    volumes = selection.volumes
    work: NDArray[Any] = raw
    scaled = (slope, inter)
    if options.gibbs or options.denoise:
        clock = time.perf_counter()
        work = _floats(raw, volumes, slope, inter)
        volumes = np.arange(len(volumes))
        scaled = (1.0, 0.0)
        if options.gibbs:
            from dipy.denoise.gibbs import gibbs_removal  # noqa: PLC0415

            gibbs_removal(work, slice_axis=2, n_points=3, inplace=True, num_processes=1)
            steps.append(
                Step("gibbs", "dipy.denoise.gibbs.gibbs_removal", {"slice_axis": 2, "n_points": 3})
            )
        if options.denoise == "mppca":
            from dipy.denoise.localpca import mppca  # noqa: PLC0415
            from threadpoolctl import threadpool_limits  # noqa: PLC0415

            # One small eigen-decomposition per voxel: threaded BLAS only adds overhead
            # (ten times slower on two cores).
            with threadpool_limits(limits=1, user_api="blas"):
                work = mppca(work, mask=mask, patch_radius=2, suppress_warning=True)
            work = work.astype(np.float32, copy=False)
            steps.append(Step("denoise", "dipy.denoise.localpca.mppca", {"patch_radius": 2}))
        elif options.denoise == "patch2self":
            from dipy.denoise.patch2self import patch2self  # noqa: PLC0415

            bvals = gradients.bvals[selection.volumes]
            work = patch2self(
                work,
                bvals,
                model="ols",
                b0_threshold=gradients.b0_threshold,
                out_dtype=np.float32,
                version=3,
            )
            steps.append(
                Step(
                    "denoise", "dipy.denoise.patch2self.patch2self", {"model": "ols", "version": 3}
                )
            )
        seconds["preprocess"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fa, md, v1 = _fit(work, volumes, mask, gradients, selection, options, *scaled)
    seconds["fit"] = time.perf_counter() - clock
    steps.append(
        Step(
            "tensor_fit",
            f"dipy.reconst.dti.TensorModel({options.fit_method})",
            {
                "fit_method": options.fit_method,
                "max_bval": options.max_bval,
                "shells": list(selection.shells),
                "lowest_shell_fallback": selection.fallback,
                "volumes": selection.volumes.tolist(),
                "directions": selection.directions,
                "b0_threshold": gradients.b0_threshold,
                "repairs": list(gradients.repairs),
            },
        )
    )
    clipped = {
        "fa_nonfinite": int((~np.isfinite(fa[mask])).sum()),
        "md_nonfinite": int((~np.isfinite(md[mask])).sum()),
        "fa_above_1": int((fa[mask] > 1).sum()),
        "md_negative": int((md[mask] < 0).sum()),
        "md_above_max": int((md[mask] > options.md_max).sum()),
    }
    for array, top in ((fa, 1.0), (md, options.md_max)):
        np.nan_to_num(array, copy=False, nan=0.0, posinf=top, neginf=0.0)
        np.clip(array, 0.0, top, out=array)
    steps.append(
        Step(
            "clip",
            "range",
            {"fa": [0.0, 1.0], "md": [0.0, options.md_max], "md_unit": "mm^2/s", **clipped},
        )
    )

    orientation = None
    if options.orientation != "off":
        clock = time.perf_counter()
        orientation = check_orientation(v1, fa, spacing)
        seconds["orientation"] = time.perf_counter() - clock
        steps.append(Step("bvec_orientation", "fibre_coherence", orientation.as_dict()))
    return DwiMaps(mean_b0, mask, fa, md, orientation, steps, seconds)


def _mean_volume(
    raw: NDArray[Any], volumes: NDArray[np.intp], slope: float, inter: float, where: str
) -> NDArray[np.float32]:
    total = np.zeros(raw.shape[:3], dtype=np.float64)
    for v in volumes:
        total += raw[..., v]
    mean = (total / len(volumes) * slope + inter).astype(np.float32)
    if not np.isfinite(mean).all():
        raise InvalidInputError(where, R.NON_FINITE, "the b0 volumes hold NaN or infinite values")
    return mean


def _foreground(mean_b0: NDArray[np.float32], options: DwiOptions) -> NDArray[np.bool_]:
    from dipy.segment.mask import median_otsu  # noqa: PLC0415

    _, mask = median_otsu(mean_b0, **options.median_otsu)
    return np.asarray(mask, dtype=bool)


def _floats(
    raw: NDArray[Any], volumes: NDArray[np.intp], slope: float, inter: float
) -> NDArray[np.float32]:
    out = np.empty((*raw.shape[:3], len(volumes)), dtype=np.float32)
    for i, v in enumerate(volumes):
        out[..., i] = raw[..., v] * slope + inter
    return out


def _slabs(shape: tuple[int, ...], volumes: int, budget: int) -> Iterator[slice]:
    """Slices along the last spatial axis holding about ``budget`` values of all volumes."""
    per_plane = shape[0] * shape[1] * volumes
    depth = max(1, budget // max(per_plane, 1))
    for start in range(0, shape[2], depth):
        yield slice(start, min(start + depth, shape[2]))


def _fit(
    work: NDArray[Any],
    volumes: NDArray[np.intp],
    mask: NDArray[np.bool_],
    gradients: Gradients,
    selection: Selection,
    options: DwiOptions,
    slope: float,
    inter: float,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    from dipy.core.gradients import gradient_table  # noqa: PLC0415
    from dipy.reconst.dti import TensorModel  # noqa: PLC0415

    used = selection.volumes
    table = gradient_table(
        gradients.bvals[used], bvecs=gradients.bvecs[used], b0_threshold=gradients.b0_threshold
    )
    model = TensorModel(table, fit_method=options.fit_method)
    shape = work.shape[:3]
    fa = np.zeros(shape, dtype=np.float32)
    md = np.zeros(shape, dtype=np.float32)
    v1 = np.zeros((*shape, 3), dtype=np.float32)
    every = len(volumes) == work.shape[3] and np.array_equal(volumes, np.arange(work.shape[3]))
    for z in _slabs(shape, len(volumes), options.chunk_values):
        inside = mask[:, :, z]
        if not inside.any():
            continue
        slab = work[:, :, z]
        signal = slab[inside] if every else slab[inside][:, volumes]
        signal = (
            signal.astype(np.float64) * slope + inter
            if (slope, inter) != (1.0, 0.0)
            else signal.astype(np.float64)
        )
        fit = model.fit(signal)
        fa[:, :, z][inside] = fit.fa
        md[:, :, z][inside] = fit.md
        v1[:, :, z][inside] = fit.evecs[..., 0]
    return fa, md, v1
