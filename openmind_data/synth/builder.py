"""Writing one synthetic BIDS dataset: text files at once, images as tasks, truth for every file.

A recipe (:mod:`openmind_data.synth.recipes`) describes a dataset through a
:class:`DatasetBuilder`. Small files (JSON, TSV, README) are written immediately; images become
:class:`ImageTask` records, rendered later by :func:`run_image_task` in any process. Every file
written gets one ground-truth record saying what a correct curation does with it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from openmind_data.exclusions import ExclusionReason
from openmind_data.synth.diffusion import simulate_dwi
from openmind_data.synth.geometry import NativeGrid
from openmind_data.synth.render import AnatomySpec, render_anatomy

__all__ = [
    "IDENTIFYING_FIELDS",
    "Broken",
    "DatasetBuilder",
    "ImageTask",
    "Role",
    "run_image_task",
    "save_nifti",
    "seed_for",
]

Role = Literal["image", "excluded", "ignored", "metadata"]
Broken = Literal["none", "non_finite", "two_d", "five_d", "truncated", "gradient_mismatch"]

# Sidecar fields a curator must never publish: they identify people, places or times.
IDENTIFYING_FIELDS = (
    "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "DeviceSerialNumber", "StationName",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientWeight",
    "ReferringPhysicianName", "OperatorsName", "StudyInstanceUID", "SeriesInstanceUID",
)  # fmt: skip


def seed_for(seed: int, key: str) -> int:
    """A 64-bit seed for one file, from the collection seed and the file's path."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


@dataclass(frozen=True)
class ImageTask:
    """An image to render and write: picklable, so any process can run it."""

    path: str  # relative to the collection root
    truth_stem: str  # truth files are written as <truth_stem>_<mask>.nii.gz
    dtype: str
    seed: int
    anatomy: AnatomySpec | None = None
    dwi_grid: NativeGrid | None = None
    dwi_pose: NDArray[np.float64] | None = None
    dwi_scheme: str = "small_64D"
    dwi_snr: float = 30.0
    broken: Broken = "none"
    sform: bool = True


@dataclass
class DatasetBuilder:
    """Collects a dataset's files and truth; ``root`` is the collection root."""

    root: Path
    dataset_id: str
    seed: int
    tasks: list[ImageTask] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (collection path, of path)

    @property
    def base(self) -> str:
        return self.dataset_id

    def rng(self, key: str) -> np.random.Generator:
        return np.random.default_rng(seed_for(self.seed, f"{self.dataset_id}/{key}"))

    # -- small files ---------------------------------------------------------------------------
    def write_bytes(self, rel: str, content: bytes, role: Role, **truth: Any) -> None:
        path = self.root / self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.record(rel, role, **truth)

    def write_text(self, rel: str, text: str, role: Role = "metadata", **truth: Any) -> None:
        self.write_bytes(rel, text.encode("utf-8"), role, **truth)

    def write_json(
        self, rel: str, obj: Mapping[str, Any], role: Role = "metadata", **truth: Any
    ) -> None:
        self.write_text(rel, json.dumps(obj, indent=2) + "\n", role, **truth)

    def sidecar(self, rel: str, fields: Mapping[str, Any]) -> str:
        """A JSON sidecar that images can inherit; returns ``rel`` for an image's layer list."""
        self.sidecars[rel] = dict(fields)
        identifying = sorted(k for k in fields if k in IDENTIFYING_FIELDS)
        self.write_json(rel, fields, "metadata", identifying_fields=identifying)
        return rel

    def excluded(
        self, rel: str, content: bytes | None, reason: ExclusionReason, stage: str, **truth: Any
    ) -> None:
        """A broken file, written as given, with the exclusion a curator must record."""
        if content is not None:
            self.write_bytes(
                rel, content, "excluded", reason=str(reason), earliest_stage=stage, **truth
            )
        else:
            self.record(rel, "excluded", reason=str(reason), earliest_stage=stage, **truth)

    def duplicate(self, rel: str, *, of: str, modality: str) -> None:
        """A byte-for-byte copy of another dataset's image (``of``, relative to the collection
        root), made once every image is written: a build publishes it once."""
        self.copies.append((f"{self.base}/{rel}", of))
        self.record(
            rel,
            "excluded",
            modality=modality,
            reason=str(ExclusionReason.DUPLICATE),
            earliest_stage="build",
            duplicate_of=of,
        )

    def record(self, rel: str, role: Role, **truth: Any) -> None:
        self.truth.append(
            {"path": f"{self.base}/{rel}", "dataset_id": self.dataset_id, "role": role, **truth}
        )

    # -- images --------------------------------------------------------------------------------
    def image(
        self,
        rel: str,
        *,
        modality: str | None,
        dtype: str,
        anatomy: AnatomySpec | None = None,
        dwi: tuple[NativeGrid, NDArray[np.float64], str] | None = None,
        sidecars: Sequence[str] = (),
        sidecar_fields: Mapping[str, Any] | None = None,
        broken: Broken = "none",
        reason: ExclusionReason | None = None,
        stage: str = "crawl",
        sform: bool = True,
        **truth: Any,
    ) -> None:
        """Queue an image; its own sidecar (if any) is written now.

        ``sidecars`` lists inherited sidecars from far to near; ``sidecar_fields`` is the
        image's own JSON. The truth records the metadata that inheritance resolves to.
        """
        stem = rel.removesuffix(".nii.gz")
        resolved: dict[str, Any] = {}
        for layer in sidecars:
            resolved.update(self.sidecars[layer])
        if sidecar_fields is not None:
            resolved.update(sidecar_fields)
            self.sidecar(f"{stem}.json", sidecar_fields)
        if dwi is not None:
            grid, pose, scheme = dwi
            task = ImageTask(
                f"{self.base}/{rel}",
                f"truth/{self.base}/{stem}",
                dtype,
                seed_for(self.seed, f"{self.base}/{rel}"),
                dwi_grid=grid,
                dwi_pose=pose,
                dwi_scheme=scheme,
                broken=broken,
                sform=sform,
            )
        else:
            task = ImageTask(
                f"{self.base}/{rel}",
                f"truth/{self.base}/{stem}",
                dtype,
                seed_for(self.seed, f"{self.base}/{rel}"),
                anatomy=anatomy,
                broken=broken,
                sform=sform,
            )
        self.tasks.append(task)
        identifying = sorted(k for k in resolved if k in IDENTIFYING_FIELDS)
        common = {
            "resolved_sidecar": {k: v for k, v in resolved.items() if k not in IDENTIFYING_FIELDS},
            "identifying_fields": identifying,
            "dtype": dtype,
        }
        if reason is None:
            self.record(rel, "image", modality=modality, **common, **truth)
        else:
            self.record(
                rel,
                "excluded",
                modality=modality,
                reason=str(reason),
                earliest_stage=stage,
                **common,
                **truth,
            )
        if dwi is not None:
            for ext in ("bval", "bvec"):
                self.record(
                    f"{stem}.{ext}",
                    "metadata" if reason is None else "excluded",
                    **({} if reason is None else {"reason": str(reason), "earliest_stage": stage}),
                )


# -- rendering and writing, in any process -----------------------------------------------------
def run_image_task(root: Path, task: ImageTask) -> dict[str, Any]:
    """Render and write one image and its truth masks; returns truth to merge into its record."""
    rng = np.random.default_rng(task.seed)
    out = root / task.path
    out.parent.mkdir(parents=True, exist_ok=True)
    truth_dir = root / task.truth_stem
    truth_dir.parent.mkdir(parents=True, exist_ok=True)

    if task.dwi_grid is not None and task.dwi_pose is not None:
        return _write_dwi(root, out, task, rng)
    if task.anatomy is None:
        raise ValueError(f"{task.path}: task has neither anatomy nor diffusion")
    rendered = render_anatomy(task.anatomy, rng)
    data = rendered.data
    if task.broken == "two_d":
        data = data[:, :, data.shape[2] // 2]
    elif task.broken == "five_d":
        data = np.stack([data, data * 0.8, data * 0.6], axis=-1)[:, :, :, None, :]
    elif task.broken == "non_finite":
        data = data.copy()
        flat = data.reshape(-1)
        picks = rng.choice(flat.size, size=max(1, flat.size // 2000), replace=False)
        flat[picks[::2]] = np.nan
        flat[picks[1::2]] = np.inf
    save_nifti(out, data, rendered.grid.affine, task.dtype, task.sform)
    if task.broken == "truncated":
        raw = out.read_bytes()
        out.write_bytes(raw[: len(raw) // 2])
    masks = {
        "anatomy": rendered.head,
        "brain": rendered.brain,
        "face": rendered.face,
        "anon": rendered.anon,
    }
    written = {}
    for name, mask in masks.items():
        rel = f"{task.truth_stem}_{name}.nii.gz"
        save_nifti(root / rel, mask, rendered.grid.affine, "uint8", True)
        written[name] = rel
    spec = task.anatomy
    return {
        "truth_masks": written,
        "shape": list(data.shape),
        "orientation": rendered.grid.orientation,
        "spacing": [round(s, 4) for s in rendered.grid.spacing],
        "defacing": spec.deface,
        "is_brain_extract": spec.brain_extract,
        "padded": bool(any(spec.pad)),
        "degradation": spec.degradation,
        "severity": spec.severity,
        "contrast": spec.contrast,
        "snr": spec.snr,
    }


def _write_dwi(root: Path, out: Path, task: ImageTask, rng: np.random.Generator) -> dict[str, Any]:
    assert task.dwi_grid is not None and task.dwi_pose is not None
    series = simulate_dwi(task.dwi_grid, task.dwi_pose, task.dwi_scheme, rng, snr=task.dwi_snr)
    scale = save_nifti(out, series.data, task.dwi_grid.affine, task.dtype, task.sform)
    stem = str(out)[: -len(".nii.gz")]
    bvals, bvecs = series.bvals, series.bvecs
    if task.broken == "gradient_mismatch":
        bvals, bvecs = bvals[:-3], bvecs[:-3]
    Path(f"{stem}.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    Path(f"{stem}.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs.T) + "\n"
    )
    written = {}
    for name, volume, dtype in (
        ("fa", series.fa, "float32"),
        ("md", series.md, "float32"),
        ("brain", series.brain, "uint8"),
        ("anatomy", series.head, "uint8"),
    ):
        rel = f"{task.truth_stem}_{name}.nii.gz"
        save_nifti(root / rel, volume, task.dwi_grid.affine, dtype, True)
        written[name] = rel
    return {
        "truth_masks": written,
        "shape": list(series.data.shape),
        "orientation": task.dwi_grid.orientation,
        "spacing": [round(s, 4) for s in task.dwi_grid.spacing],
        "gradient_scheme": task.dwi_scheme,
        "n_volumes": int(series.data.shape[3]),
        "n_bvals_written": len(bvals),
        "noise_sigma": series.sigma * scale,  # in the units of the written file
        "snr": task.dwi_snr,
    }


def save_nifti(
    path: Path, data: NDArray[Any], affine: NDArray[np.float64], dtype: str, sform: bool
) -> float:
    """Write NIfTI-1 deterministically (gzip without a timestamp), scaled into integer types.

    Float data written as an integer type are scaled so the 99.9th percentile becomes 4000.
    Returns that factor (1.0 when nothing was scaled). Compression level 1: noisy voxels barely
    compress better at higher levels, and cost 5x the time.
    """
    array = np.asarray(data)
    scale = 1.0
    if np.dtype(dtype).kind in "iu" and array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        top = float(np.percentile(finite, 99.9)) if finite.size else 0.0
        scale = 4000.0 / top if top > 0 else 1.0
        array = np.clip(np.rint(array * scale), 0, np.iinfo(np.dtype(dtype)).max)
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1 if sform else 0)
    payload = image.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=1) as gz,
    ):
        gz.write(payload)
    return scale
