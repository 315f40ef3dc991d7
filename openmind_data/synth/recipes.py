"""The five dataset recipes of a synthetic OpenNeuro-like collection.

Each recipe is one kind of dataset a crawl of OpenNeuro meets, with its quirks and its broken
files; a collection is the five of them, repeated ``copies`` times under new accession numbers.

1. ``structural_sessions``: Siemens 3T, sessions, sidecar inheritance at three levels,
   pydeface-style defacing, func/fmap/derivatives/sourcedata/code to ignore. CC0.
2. ``multicontrast_ms``: GE 1.5T, no sessions, times written in milliseconds, messy
   participants.tsv, quickshear defacing, LPS and zero-padded grids. CC-BY 4.0.
3. ``ultrahigh_field``: Siemens 7T, skull-stripped float images, MP2RAGE inversions and UNIT1,
   thick-slice inplaneT2, oblique qform-only headers, age and sex in phenotype/. PDDL.
4. ``diffusion``: Philips 3T, DWI single- and multi-shell with real dipy gradient schemes,
   un-defaced T1w, no licence, participants.tsv that is not UTF-8.
5. ``quality``: T1w images with graded noise, blur, bias, ghosting and motion; ages in months,
   ambidextrous participants. CC0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from openmind_data.exclusions import ExclusionReason as R
from openmind_data.synth.builder import Broken, DatasetBuilder, save_nifti
from openmind_data.synth.config import SynthConfig
from openmind_data.synth.geometry import NativeGrid, plan_grid
from openmind_data.synth.participants import (
    Participant,
    make_participants,
    participants_json,
    participants_tsv,
    phenotype_tsv,
)
from openmind_data.synth.render import AnatomySpec, subject_transform

__all__ = ["RECIPES", "Recipe"]

Recipe = Callable[[DatasetBuilder, SynthConfig], None]

_IDENTIFYING = {
    "AcquisitionDateTime": "2019-03-14T09:41:27.500000",
    "InstitutionName": "Synthetic University Hospital",
    "InstitutionAddress": "Hospital Street 1, Sometown",
    "DeviceSerialNumber": "166038",
    "StationName": "AWP166038",
    "PatientName": "DOE^JANE",
}


def _describe(
    b: DatasetBuilder,
    name: str,
    license_raw: str | None,
    license_norm: str | None,
    version: str,
    doi_style: str,
) -> None:
    number = b.dataset_id
    doi = {
        "plain": f"10.18112/openneuro.{number}.v{version}",
        "prefixed": f"doi:10.18112/openneuro.{number}.v{version}",
        "url": f"https://doi.org/10.18112/openneuro.{number}.v{version}",
    }[doi_style]
    description: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "Authors": ["Ada Synthetic", "Grace Phantom", "Alan Voxel"],
        "DatasetDOI": doi,
        "HowToAcknowledge": "Please cite the synthetic OpenMind toolkit collection.",
        "Funding": ["Synthetic Grant 0001"],
        "ReferencesAndLinks": ["https://example.org/synthetic"],
    }
    if license_raw is not None:
        description["License"] = license_raw
    b.write_json(
        "dataset_description.json",
        description,
        "metadata",
        license=license_norm,
        license_raw=license_raw,
        doi=f"doi:10.18112/openneuro.{number}.v{version}",
        dataset_version=version,
        name=name,
    )
    b.write_text("README", f"{name}\n\nA synthetic dataset made by openmind synth.\n")
    b.write_text(
        "CHANGES",
        f"{version} 2021-06-01\n  - Current snapshot.\n1.0.0 2020-01-15\n  - Initial snapshot.\n",
    )


def _grid(
    b: DatasetBuilder,
    cfg: SynthConfig,
    key: str,
    spacing: tuple[float, float, float],
    orientation: str,
    oblique: float = 0.0,
) -> NativeGrid:
    rng = b.rng(f"{key}/grid")
    scaled = tuple(float(s * cfg.spacing_scale) for s in spacing)
    return plan_grid(
        (scaled[0], scaled[1], scaled[2]),
        orientation,
        oblique_degrees=oblique + float(rng.uniform(-2, 2)),
        centre_jitter_mm=rng.normal(0.0, 4.0, size=3),
    )


def _acquisition(
    unit: str,
    manufacturer_raw: str,
    manufacturer: str,
    model: str,
    field: float,
    tr: float,
    te: float,
    ti: float | None = None,
    flip: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sidecar written in ``unit`` ('s' or 'ms') and the values a curator must recover."""
    factor = 1000.0 if unit == "ms" else 1.0
    sidecar: dict[str, Any] = {
        "Manufacturer": manufacturer_raw,
        "ManufacturersModelName": model,
        "MagneticFieldStrength": field,
        "RepetitionTime": round(tr * factor, 6),
        "EchoTime": round(te * factor, 6),
    }
    expected: dict[str, Any] = {
        "manufacturer": manufacturer,
        "model_name": model,
        "magnetic_field_strength": field,
        "repetition_time": tr,
        "echo_time": te,
        "converted_from_ms": unit == "ms",
    }
    if ti is not None:
        sidecar["InversionTime"] = round(ti * factor, 6)
        expected["inversion_time"] = ti
    if flip is not None:
        sidecar["FlipAngle"] = flip
        expected["flip_angle"] = flip
    return sidecar, expected


def _person(p: Participant, age: float | None = None) -> dict[str, Any]:
    return {
        "age": p.age if age is None else age,
        "sex": p.sex,
        "handedness": p.handedness,
        "health_status": p.health_status,
    }


def _labels(n: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, n + 1)]


def _tiny_nifti(b: DatasetBuilder, rel: str, shape: tuple[int, ...]) -> None:
    """A small real NIfTI for files a curation must ignore (bold runs, fieldmaps, masks)."""
    rng = b.rng(rel)
    path = b.root / b.base / rel
    save_nifti(
        path,
        rng.uniform(0, 100, size=shape).astype(np.float32),
        np.diag([3.0, 3, 3, 1]),
        "int16",
        True,
    )
    b.record(rel, "ignored")


def _ignorable_folders(b: DatasetBuilder, sub: str, ses: str) -> None:
    prefix = f"sub-{sub}/ses-{ses}" if ses else f"sub-{sub}"
    name = f"sub-{sub}_ses-{ses}" if ses else f"sub-{sub}"
    _tiny_nifti(b, f"{prefix}/func/{name}_task-rest_bold.nii.gz", (8, 8, 6, 5))
    b.write_json(
        f"{prefix}/func/{name}_task-rest_bold.json",
        {"TaskName": "rest", "RepetitionTime": 2.0},
        "ignored",
    )
    _tiny_nifti(b, f"{prefix}/fmap/{name}_phasediff.nii.gz", (8, 8, 6))
    b.write_json(
        f"{prefix}/fmap/{name}_phasediff.json",
        {"EchoTime1": 0.00492, "EchoTime2": 0.00738},
        "ignored",
    )
    b.write_json(
        "derivatives/fmriprep/dataset_description.json",
        {
            "Name": "fMRIPrep",
            "BIDSVersion": "1.8.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "fMRIPrep"}],
        },
        "ignored",
    )
    _tiny_nifti(b, f"derivatives/fmriprep/{prefix}/anat/{name}_desc-brain_mask.nii.gz", (8, 8, 6))
    b.write_bytes(
        f"sourcedata/{prefix}/dicom/IM0001.dcm", b"\0" * 128 + b"DICM" + b"\0" * 64, "ignored"
    )
    b.write_text("code/convert_dicoms.py", "# heudiconv heuristic used for conversion\n", "ignored")
    b.write_text(".datalad/config", '[datalad "dataset"]\n\tid = synthetic\n', "ignored")


# -- 1 ----------------------------------------------------------------------------------------
def structural_sessions(b: DatasetBuilder, cfg: SynthConfig) -> None:
    _describe(b, "Structural sessions (synthetic)", "CC0", "CC0-1.0", "1.0.2", "plain")
    labels = _labels(max(cfg.subjects, 3))
    people = make_participants(labels, "plain", b.rng("participants"))
    b.write_text("participants.tsv", participants_tsv(people))
    b.write_json("participants.json", participants_json("plain"))
    acq = {}
    for contrast, (tr, te, ti, flip) in {
        "T1w": (2.3, 0.00226, 0.9, 8.0),
        "T2w": (3.2, 0.408, None, None),
        "FLAIR": (5.0, 0.387, 1.8, None),
    }.items():
        sidecar, expected = _acquisition(
            "s", "Siemens", "Siemens", "Prisma_fit", 3.0, tr, te, ti, flip
        )
        acq[contrast] = (b.sidecar(f"{contrast}.json", sidecar), expected)
    # A subject-level override of the echo time (nearest sidecar wins).
    b.sidecar("sub-01/sub-01_T1w.json", {"EchoTime": 0.00232})

    for p in people:
        sub = p.label
        pose = subject_transform(b.rng(f"sub-{sub}/pose"))
        ages = {"1": p.age, "2": None if p.age is None else p.age + 1.5}
        if cfg.broken and sub == "03":
            b.write_text(
                f"sub-{sub}/sub-{sub}_sessions.tsv",
                "session_id\tage\nses-1\t40\t\textra\nses-2\n",
                "excluded",
                reason=str(R.INVALID_TSV),
                earliest_stage="crawl",
            )
            ages = {"1": p.age, "2": p.age}
        else:
            b.write_text(
                f"sub-{sub}/sub-{sub}_sessions.tsv",
                "session_id\tage\n"
                + "".join(f"ses-{s}\t{a:g}\n" for s, a in ages.items() if a is not None),
            )
        for ses, contrasts in (("1", ("T1w", "T2w", "FLAIR")), ("2", ("T1w",))):
            for contrast in contrasts:
                suffix = "acq-MPRAGE_T1w" if contrast == "T1w" else contrast
                rel = f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_{suffix}.nii.gz"
                spacing = {
                    "T1w": (1.0, 1.0, 1.0),
                    "T2w": (1.0, 1.0, 1.0),
                    "FLAIR": (0.9, 0.9, 3.0),
                }[contrast]
                orientation = "PIR" if contrast == "T1w" else "RAS"
                grid = _grid(b, cfg, rel, spacing, orientation)
                pad = (6, 0, 6) if (sub, ses, contrast) == ("02", "1", "T1w") else (0, 0, 0)
                spec = AnatomySpec(
                    contrast,
                    grid,
                    pose,
                    snr=28.0,
                    deface="pydeface",
                    pad=pad,
                    phase_axis=2 if orientation == "PIR" else 1,
                )
                layers = [acq[contrast][0]]
                expected = dict(acq[contrast][1])
                if sub == "01" and contrast == "T1w":
                    layers.append("sub-01/sub-01_T1w.json")
                    expected["echo_time"] = 0.00232
                own = dict(_IDENTIFYING) if (ses, contrast) == ("1", "T1w") else None
                b.image(
                    rel,
                    modality=contrast,
                    dtype="int16",
                    anatomy=spec,
                    sidecars=layers,
                    sidecar_fields=own,
                    expected=expected,
                    subject=sub,
                    session=ses,
                    participant=_person(p, ages[ses]),
                )
        if sub == "01":
            _ignorable_folders(b, sub, "1")
    if cfg.broken:
        b.excluded("sub-03/ses-2/anat/sub-03_ses-2_T2w.nii.gz", b"", R.ZERO_BYTE, "crawl")
        b.excluded(
            "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz",
            b"<html><body><h1>404 Not Found</h1></body></html>\n",
            R.NOT_NIFTI,
            "crawl",
        )
        b.excluded(
            "sub-01/ses-1/anat/._sub-01_ses-1_acq-MPRAGE_T1w.nii.gz",
            b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\0" * 64,
            R.APPLEDOUBLE,
            "crawl",
        )


# -- 2 ----------------------------------------------------------------------------------------
def multicontrast_ms(b: DatasetBuilder, cfg: SynthConfig) -> None:
    _describe(b, "Multi-contrast 1.5T (synthetic)", "CC-BY 4.0", "CC-BY-4.0", "2.1.0", "prefixed")
    labels = _labels(max(cfg.subjects + 2, 5))
    people = make_participants(labels, "messy", b.rng("participants"))
    b.write_text("participants.tsv", participants_tsv(people))
    b.write_json("participants.json", participants_json("messy"))
    acq = {}
    for contrast, (tr, te) in {
        "T1w": (2.3, 0.00298),
        "T2w": (3.2, 0.409),
        "PDw": (3.0, 0.012),
    }.items():
        sidecar, expected = _acquisition(
            "ms", "GE MEDICAL SYSTEMS", "GE", "DISCOVERY MR750", 1.5, tr, te
        )
        sidecar["PhaseEncodingDirection"] = "j-"
        expected["phase_encoding_direction"] = "j-"
        acq[contrast] = (b.sidecar(f"{contrast}.json", sidecar), expected)

    for p in people:
        sub = p.label
        pose = subject_transform(b.rng(f"sub-{sub}/pose"))
        names = ["T1w", "T2w"] + (["run-2_T1w", "PDw"] if sub == "01" else [])
        for name in names:
            contrast = name.split("_")[-1]
            run1 = "run-1_" if sub == "01" and name == "T1w" else ""
            rel = f"sub-{sub}/anat/sub-{sub}_{run1}{name}.nii.gz"
            grid = _grid(
                b, cfg, rel, (1.0, 1.0, 1.2) if contrast == "T1w" else (0.9, 0.9, 1.5), "LPS"
            )
            spec = AnatomySpec(contrast, grid, pose, snr=22.0, deface="quickshear", pad=(4, 4, 0))
            broken = cfg.broken and (sub, contrast) == ("02", "T2w")
            invalid_json = cfg.broken and name == "PDw"
            if invalid_json:
                b.write_text(
                    f"sub-{sub}/anat/sub-{sub}_PDw.json",
                    '{"EchoTime": 12.0, "FlipAngle": 90,}\n',
                    "excluded",
                    reason=str(R.INVALID_JSON),
                    earliest_stage="crawl",
                )
            b.image(
                rel,
                modality=contrast,
                dtype="uint16",
                anatomy=spec,
                sidecars=[acq[contrast][0]],
                expected=acq[contrast][1],
                subject=sub,
                participant=_person(p),
                broken="truncated" if broken else "none",
                reason=R.TRUNCATED if broken else None,
            )
    if cfg.broken:
        link = b.root / b.base / "sub-03/anat/sub-03_FLAIR.nii.gz"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(
            "../../.git/annex/objects/Xk/9q/MD5E-s4211--3e8a.nii.gz/MD5E-s4211--3e8a.nii.gz"
        )
        b.excluded("sub-03/anat/sub-03_FLAIR.nii.gz", None, R.DANGLING_SYMLINK, "crawl")
        rel = "sub-01/anat/sub-01_T1rho.nii.gz"
        grid = _grid(b, cfg, rel, (1.2, 1.2, 3.0), "RAS")
        b.image(
            rel,
            modality=None,
            dtype="int16",
            anatomy=AnatomySpec("T1rho", grid, subject_transform(b.rng("sub-01/pose"))),
            reason=R.UNMAPPED_MODALITY,
            stage="crawl",
            subject="01",
        )


# -- 3 ----------------------------------------------------------------------------------------
def ultrahigh_field(b: DatasetBuilder, cfg: SynthConfig) -> None:
    _describe(b, "Ultra-high field MP2RAGE (synthetic)", "PDDL", "PDDL-1.0", "1.1.0", "url")
    labels = _labels(max(cfg.subjects - 1, 2))
    people = make_participants(labels, "phenotype", b.rng("participants"))
    b.write_text("participants.tsv", participants_tsv(people))
    b.write_text("phenotype/demographics.tsv", phenotype_tsv(people))
    b.write_json(
        "phenotype/demographics.json",
        {"age": {"Units": "years"}, "sex": {"Levels": {"M": "male", "F": "female"}}},
    )
    sidecar, expected = _acquisition(
        "s", "SIEMENS", "Siemens", "MAGNETOM Terra", 7.0, 5.0, 0.00225, 0.9, 4.0
    )
    t1w = b.sidecar("T1w.json", sidecar)
    if cfg.broken:
        latin = '{"Manufacturer": "SIEMENS", "ProtocolName": "mp2rage Zürich"}\n'
        b.write_bytes(
            "UNIT1.json",
            latin.encode("latin-1"),
            "excluded",
            reason=str(R.NOT_UTF8),
            earliest_stage="crawl",
        )
    for p in people:
        sub = p.label
        pose = subject_transform(b.rng(f"sub-{sub}/pose"))
        items: list[tuple[str, str, str, bool]] = [("T1w", "T1w", "T1w", True)]
        if sub == "02":
            items.append(("inplaneT2", "inplaneT2", "inplaneT2", False))
        else:
            items += [
                ("UNIT1", "UNIT1", "UNIT1", False),
                ("inv-1_MP2RAGE", "MP2RAGE", "MP2RAGE", False),
                ("inv-2_MP2RAGE", "MP2RAGE", "PDw", False),
            ]
        for name, modality, contrast, stripped in items:
            rel = f"sub-{sub}/anat/sub-{sub}_{name}.nii.gz"
            spacing = (0.9, 0.9, 4.0) if modality == "inplaneT2" else (0.75, 0.75, 0.75)
            grid = _grid(b, cfg, rel, spacing, "RAS", oblique=12.0)
            spec = AnatomySpec(
                contrast,
                grid,
                pose,
                snr=35.0,
                brain_extract=stripped,
                uniform_background=modality == "UNIT1",
                gamma=1.1,
            )
            b.image(
                rel,
                modality=modality,
                dtype="float32",
                anatomy=spec,
                sidecars=[t1w] if modality == "T1w" else [],
                expected=expected if modality == "T1w" else {},
                subject=sub,
                participant=_person(p),
                sform=False,
            )
    if cfg.broken:
        pose = subject_transform(b.rng("sub-02/pose"))
        cases: list[tuple[str, str, str, Broken, R, str]] = [
            ("02", "run-2_T1w", "T1w", "non_finite", R.NON_FINITE, "load"),
            ("01", "acq-localizer_T1w", "T1w", "two_d", R.TOO_FEW_DIMENSIONS, "crawl"),
            ("02", "T2starw", "T2starw", "five_d", R.TOO_MANY_DIMENSIONS, "crawl"),
        ]
        for sub, name, contrast, broken, reason, stage in cases:
            rel = f"sub-{sub}/anat/sub-{sub}_{name}.nii.gz"
            grid = _grid(b, cfg, rel, (1.0, 1.0, 1.0), "RAS")
            b.image(
                rel,
                modality=contrast,
                dtype="float32",
                anatomy=AnatomySpec(contrast, grid, pose),
                broken=broken,
                reason=reason,
                stage=stage,
                subject=sub,
            )


# -- 4 ----------------------------------------------------------------------------------------
def diffusion(b: DatasetBuilder, cfg: SynthConfig) -> None:
    _describe(b, "Diffusion (synthetic)", None, None, "1.0.0", "plain")
    labels = _labels(max(cfg.subjects, 3))
    if cfg.broken:
        tsv = "participant_id\tage\tsite\n" + "".join(
            f"sub-{s}\t{30 + i}\tZürich\n" for i, s in enumerate(labels)
        )
        b.write_bytes(
            "participants.tsv",
            tsv.encode("latin-1"),
            "excluded",
            reason=str(R.NOT_UTF8),
            earliest_stage="crawl",
        )
    t1_sidecar, t1_expected = _acquisition(
        "s", "Philips Medical Systems", "Philips", "Achieva", 3.0, 0.0081, 0.0037, None, 8.0
    )
    t1w = b.sidecar("T1w.json", t1_sidecar)
    dwi_sidecar, dwi_expected = _acquisition(
        "s", "Philips Medical Systems", "Philips", "Achieva", 3.0, 7.5, 0.085
    )
    dwi_sidecar |= {"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.052}
    dwi_expected["phase_encoding_direction"] = "j"
    dwi_json = b.sidecar("dwi.json", dwi_sidecar)
    nobody = {"age": None, "sex": None, "handedness": None, "health_status": None}
    schemes = ["small_64D", "gtab_3shell", "gtab_isbi2013_2shell"]
    for i, sub in enumerate(labels):
        pose = subject_transform(b.rng(f"sub-{sub}/pose"))
        mismatch = cfg.broken and sub == "03"
        if not mismatch:
            rel = f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"
            grid = _grid(b, cfg, rel, (1.0, 1.0, 1.0), "LAS")
            b.image(
                rel,
                modality="T1w",
                dtype="int16",
                anatomy=AnatomySpec("T1w", grid, pose, snr=30.0),
                sidecars=[t1w],
                expected=t1_expected,
                subject=sub,
                participant=nobody,
            )
        if not cfg.diffusion:
            continue
        rel = f"sub-{sub}/dwi/sub-{sub}_dwi.nii.gz"
        grid = _grid(b, cfg, rel, (2.0, 2.0, 2.0), "LAS")
        scheme = schemes[i % len(schemes)] if i < 3 else "small_64D"
        b.image(
            rel,
            modality="DWI",
            dtype="int16",
            dwi=(grid, pose, scheme),
            sidecars=[dwi_json],
            expected=dwi_expected,
            subject=sub,
            participant=nobody,
            broken="gradient_mismatch" if mismatch else "none",
            reason=R.GRADIENT_MISMATCH if mismatch else None,
            stage="crawl",
        )
    if cfg.broken:
        # A study re-sharing another's scan byte for byte, as OpenNeuro datasets do.
        first = (int(b.dataset_id.removeprefix("ds")) - 1) // len(RECIPES) * len(RECIPES) + 1
        b.duplicate(
            "sub-03/anat/sub-03_T1w.nii.gz",
            of=f"ds{first:06d}/sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.nii.gz",
            modality="T1w",
        )


# -- 5 ----------------------------------------------------------------------------------------
#: The quality ladder's contrast in successive copies of the recipes, with its acquisition
#: (TR, TE, TI, flip angle): copy 0 (the default collection) is T1w.
LADDER_CONTRASTS: tuple[tuple[str, tuple[float, float, float | None, float]], ...] = (
    ("T1w", (2.4, 0.00214, 1.0, 8.0)),
    ("T2w", (3.2, 0.409, None, 120.0)),
    ("FLAIR", (5.0, 0.388, 1.8, 120.0)),
)


def quality(b: DatasetBuilder, cfg: SynthConfig) -> None:
    _describe(b, "Image quality ladder (synthetic)", "CC0", "CC0-1.0", "1.0.0", "plain")
    copy = (int(b.dataset_id.removeprefix("ds")) - 1) // len(RECIPES)
    contrast, (tr, te, ti, flip) = LADDER_CONTRASTS[copy % len(LADDER_CONTRASTS)]
    kinds = ["noise", "blur", "bias", "ghosting", "motion"]
    cases: list[tuple[str | None, int]] = [(None, 0), (None, 0)]
    if cfg.quality:
        cases += [(k, s) for k in kinds for s in range(1, cfg.quality_levels + 1)]
    order = b.rng("assignment").permutation(len(cases))
    labels = _labels(len(cases))
    people = make_participants(labels, "months", b.rng("participants"))
    b.write_text("participants.tsv", participants_tsv(people))
    b.write_json("participants.json", participants_json("months"))
    sidecar, expected = _acquisition("s", "Siemens", "Siemens", "Skyra", 3.0, tr, te, ti, flip)
    top = b.sidecar(f"{contrast}.json", sidecar)
    for p, case in zip(people, order, strict=True):
        kind, severity = cases[int(case)]
        rel = f"sub-{p.label}/anat/sub-{p.label}_{contrast}.nii.gz"
        grid = _grid(b, cfg, rel, (1.0, 1.0, 1.0), "RAS")
        spec = AnatomySpec(
            contrast,
            grid,
            subject_transform(b.rng(f"sub-{p.label}/pose")),
            snr=30.0,
            degradation=kind,
            severity=severity,
            deface="quickshear",
        )
        b.image(
            rel,
            modality=contrast,
            dtype="int16",
            anatomy=spec,
            sidecars=[top],
            expected=expected,
            subject=p.label,
            participant=_person(p),
        )


RECIPES: tuple[tuple[str, Recipe], ...] = (
    ("structural_sessions", structural_sessions),
    ("multicontrast_ms", multicontrast_ms),
    ("ultrahigh_field", ultrahigh_field),
    ("diffusion", diffusion),
    ("quality", quality),
)
