"""Crawl one BIDS dataset: every file it holds ends as a candidate, an exclusion or an ignore.

:func:`crawl_dataset` is pure (a dataset root in, plain records out), so any process can run it.
It reads headers, never voxels, and never writes into the dataset.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from openmind_data import __version__
from openmind_data.crawl.bidsname import ENTITY_NAMES, BidsName, parse_bids_name
from openmind_data.crawl.header import HeaderInfo, read_header
from openmind_data.crawl.normalize import (
    normalize_doi,
    normalize_license,
    normalize_manufacturer,
    normalize_seconds,
    normalize_tesla,
)
from openmind_data.crawl.participants import Participants, read_participants
from openmind_data.crawl.privacy import is_identifying
from openmind_data.crawl.sidecars import SidecarIndex
from openmind_data.crawl.textfiles import read_json, read_text
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.ids import image_id
from openmind_data.modalities import modality_for

__all__ = ["PRUNED_FOLDERS", "SELECTED_DATATYPES", "DatasetCrawl", "crawl_dataset"]

#: Top-level folders that hold no raw images OpenMind takes; not descended into.
PRUNED_FOLDERS = {"derivatives", "sourcedata", "code", "stimuli", "models"}
#: Datatype folders whose images can become candidates.
SELECTED_DATATYPES = {"anat", "dwi"}
#: Suffixes in selected folders that are masks, not images.
MASK_SUFFIXES = {"defacemask", "mask", "dseg", "probseg"}
IMAGE_EXTENSIONS = (".nii.gz", ".nii")

# Sidecar field -> image-table column; the rest goes to extra_metadata.
_TIMES = {
    "RepetitionTime": "repetition_time",
    "EchoTime": "echo_time",
    "InversionTime": "inversion_time",
}
_COLUMNS = {
    "Manufacturer",
    "ManufacturersModelName",
    "MagneticFieldStrength",
    "FlipAngle",
    "PhaseEncodingDirection",
    *_TIMES,
}
# Longest plausible value in seconds; above it a value is read as milliseconds.
_UPPER = {"RepetitionTime": 20.0, "EchoTime": 1.0, "InversionTime": 10.0}
_GRADIENT_ECHO = {
    "T1w",
    "T2starw",
    "FLASH",
    "MEGRE",
    "angio",
    "SWI",
    "minIP",
    "UNIT1",
    "MP2RAGE",
    "MTw",
    "inplaneT1",
}


@dataclass
class DatasetCrawl:
    """What one dataset gave: rows for the candidate, exclusion, ignore and sources tables."""

    dataset_id: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Dataset:
    """One dataset's crawl in progress: its tables so far and what images draw on."""

    root: str
    out: DatasetCrawl
    version: str | None = None
    license: str | None = None
    people: Participants = field(default_factory=Participants)
    sidecars: SidecarIndex | None = None
    bvals: SidecarIndex | None = None
    bvecs: SidecarIndex | None = None
    fate: dict[str, str] = field(default_factory=dict)  # rel -> candidate/excluded/ignored
    # Acquisition columns per distinct (sidecar chain, modality): most images share a chain.
    acquisitions: dict[tuple[tuple[str, ...], str], dict[str, Any]] = field(default_factory=dict)

    def exclude(self, rel: str, reason: str, detail: str) -> None:
        self.out.excluded.append(
            {
                "dataset_id": self.out.dataset_id,
                "source_path": rel,
                "stage": "crawl",
                "reason": str(reason),
                "detail": detail,
            }
        )
        self.fate[rel] = "excluded"

    def ignore(self, rel: str, rule: str, kind: str = "file") -> None:
        self.out.ignored.append(
            {"dataset_id": self.out.dataset_id, "path": rel, "kind": kind, "rule": rule}
        )
        self.fate[rel] = "ignored"


def crawl_dataset(
    root: str, dataset_id: str | None = None, licenses: frozenset[str] | None = None
) -> DatasetCrawl:
    """Crawl the dataset at ``root``. ``licenses`` (SPDX ids), when given, is the set a dataset's
    licence must belong to; images of other datasets are excluded with ``license_not_allowed``."""
    root = os.path.abspath(root)
    ds = _Dataset(root, DatasetCrawl(dataset_id or os.path.basename(root)))
    files, pruned = _walk(root)
    for rel, rule in pruned:
        ds.ignore(rel, rule, "directory")

    description, ds.version = _describe(root, files, ds.exclude)
    ds.out.source = _source_row(ds.out.dataset_id, ds.version, description)
    ds.license = ds.out.source["license"]
    ds.people, read = read_participants(root, files)
    for problem in ds.people.problems:
        ds.exclude(_rel(root, problem.path), problem.reason, problem.detail)
    ds.sidecars = SidecarIndex(root, [f for f in files if f.endswith(".json")])
    ds.bvals = SidecarIndex(root, [f for f in files if f.endswith(".bval")])
    ds.bvecs = SidecarIndex(root, [f for f in files if f.endswith(".bvec")])
    allowed = licenses is None or ds.license in licenses

    for rel in files:
        if rel in ds.fate:
            continue
        base = posixpath.basename(rel)
        if base.startswith("._"):
            ds.exclude(rel, R.APPLEDOUBLE, "macOS resource fork, not an image")
        elif base.startswith("."):
            ds.ignore(rel, "hidden")
        elif rel in read:
            ds.ignore(rel, "metadata:participants")
        elif rel.endswith((".json", ".bval", ".bvec")):
            continue  # decided once the images that use them are known
        elif not rel.endswith(IMAGE_EXTENSIONS):
            ds.ignore(rel, "metadata")
        else:
            name = parse_bids_name(rel)
            if name is None or name.datatype is None:
                ds.ignore(rel, "image outside a datatype folder")
            elif name.datatype not in SELECTED_DATATYPES:
                ds.ignore(rel, f"datatype:{name.datatype}")
            elif name.suffix in MASK_SUFFIXES:
                ds.ignore(rel, f"mask:{name.suffix}")
            elif not allowed:
                ds.exclude(
                    rel,
                    R.LICENSE_NOT_ALLOWED,
                    f"dataset licence {ds.license!r} is not among {sorted(licenses or ())}",
                )
            else:
                _candidate(ds, rel, name)
                ds.fate.setdefault(rel, "candidate")

    for index in (ds.sidecars, ds.bvals, ds.bvecs):
        for rel, error in index.broken.items():
            ds.exclude(rel, error.reason, error.detail)
    for rel in files:
        if rel not in ds.fate:
            ds.ignore(rel, _metadata_rule(rel))
    ds.out.candidates.sort(key=lambda r: r["source_path"])
    ds.out.excluded.sort(key=lambda r: r["source_path"])
    ds.out.ignored.sort(key=lambda r: r["path"])
    return ds.out


def _metadata_rule(rel: str) -> str:
    if rel.endswith((".bval", ".bvec")):
        return "metadata:gradients"
    return "metadata:description" if rel == "dataset_description.json" else "metadata:sidecar"


def _rel(root: str, path: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _walk(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative paths of every file, and the folders not descended into (with the rule).

    Symbolic links to folders are not followed (they can form cycles); links to files are
    files (git-annex keeps images behind them).
    """
    files: list[str] = []
    pruned: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, folder)))
        except OSError as error:
            pruned.append((folder, f"unreadable folder ({type(error).__name__})"))
            continue
        for entry in entries:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    pruned.append((rel, "hidden"))
                elif not folder and entry.name in PRUNED_FOLDERS:
                    pruned.append((rel, entry.name))
                else:
                    stack.append(rel)
            elif entry.is_symlink() and entry.is_dir():
                pruned.append((rel, "symlinked folder"))
            else:
                files.append(rel)
    files.sort()
    pruned.sort()
    return files, pruned


_VERSION_IN_DOI = re.compile(r"\.v(\d+(?:\.\d+)*)$")
_VERSION_IN_CHANGES = re.compile(r"^\s*v?(\d+\.\d+(?:\.\d+)?)\b")


def _describe(root: str, files: list[str], exclude: Any) -> tuple[dict[str, Any], str | None]:
    description: dict[str, Any] = {}
    if "dataset_description.json" in files:
        try:
            description = read_json(os.path.join(root, "dataset_description.json"))
        except InvalidInputError as error:
            exclude("dataset_description.json", error.reason, error.detail)
    version = None
    doi = normalize_doi(description.get("DatasetDOI"))
    if doi and (match := _VERSION_IN_DOI.search(doi)):
        version = match[1]
    elif "CHANGES" in files:
        try:
            first = read_text(os.path.join(root, "CHANGES")).strip().splitlines()
        except InvalidInputError:
            first = []
        if first and (match := _VERSION_IN_CHANGES.match(first[0])):
            version = match[1]
    return description, version


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _source_row(dataset_id: str, version: str | None, d: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "dataset_version": version,
        "name": d.get("Name"),
        "license": normalize_license(d.get("License")),
        "license_raw": d.get("License"),
        "authors": _strings(d.get("Authors")),
        "doi": normalize_doi(d.get("DatasetDOI")),
        "bids_version": d.get("BIDSVersion"),
        "how_to_acknowledge": d.get("HowToAcknowledge"),
        "references_and_links": _strings(d.get("ReferencesAndLinks")),
        "funding": _strings(d.get("Funding")),
    }


def _count_gradients(path: str, rows: int) -> int:
    """Number of entries in a .bval (rows=1) or .bvec (rows=3) file."""
    text = read_text(path)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        values = [[float(v) for v in line] for line in lines]
    except ValueError:
        raise InvalidInputError(path, R.INVALID_GRADIENTS, "non-numeric values") from None
    if rows == 1:
        return sum(len(line) for line in values)
    if len(values) == 3 and len({len(line) for line in values}) == 1:
        return len(values[0])
    if values and all(len(line) == 3 for line in values):  # one row per volume
        return len(values)
    raise InvalidInputError(path, R.INVALID_GRADIENTS, "b-vectors are not 3 x N or N x 3")


def _candidate(ds: _Dataset, rel: str, name: BidsName) -> None:
    assert ds.sidecars is not None and ds.bvals is not None and ds.bvecs is not None
    modality = modality_for(name.datatype or "", name.suffix, name.entities)
    if modality is None:
        labels = "_".join(f"{k}-{v}" for k, v in name.entities.items() if k not in ("sub", "ses"))
        ds.exclude(
            rel,
            R.UNMAPPED_MODALITY,
            f"{name.datatype}/{labels + '_' if labels else ''}"
            f"{name.suffix} maps to no modality of the vocabulary",
        )
        return
    try:
        header = read_header(os.path.join(ds.root, rel))
    except InvalidInputError as error:
        ds.exclude(rel, error.reason, error.detail)
        return
    except OSError as error:  # permissions, I/O errors: the crawl goes on
        ds.exclude(rel, R.UNREADABLE_HEADER, f"cannot read the file: {error}")
        return
    is_series = modality == "DWI"
    dims = len(header.shape)
    if is_series and (dims != 4 or header.shape[3] < 2):
        ds.exclude(
            rel,
            R.TOO_FEW_DIMENSIONS,
            f"shape {header.shape}: a diffusion series needs several volumes",
        )
        return
    if not is_series and dims > 3 and any(n != 1 for n in header.shape[3:]):
        ds.exclude(
            rel, R.TOO_MANY_DIMENSIONS, f"shape {header.shape}: {modality} images must be 3D"
        )
        return
    bval_path = bvec_path = None
    if is_series:
        bval_path, bvec_path = ds.bvals.nearest(rel, name), ds.bvecs.nearest(rel, name)
        problem = _check_gradients(ds.root, header, bval_path, bvec_path)
        if problem is not None:
            ds.exclude(rel, problem[0], problem[1])
            stem = rel.removesuffix(".nii.gz").removesuffix(".nii")
            for own in (f"{stem}.bval", f"{stem}.bvec"):
                if own in (bval_path, bvec_path):
                    ds.exclude(
                        own, problem[0], f"gradients of {posixpath.basename(rel)}: {problem[1]}"
                    )
            return
    metadata, used = ds.sidecars.resolve(rel, name)
    key = (tuple(used), modality)
    acquisition = ds.acquisitions.get(key)
    if acquisition is None:
        acquisition = ds.acquisitions[key] = _acquisition(metadata, modality, used)
    person = ds.people.for_image(name.entities.get("sub"), name.entities.get("ses"))
    extra = dict(acquisition["extra_metadata"])
    extra.update(sorted(person.get("extra", {}).items()))
    run = name.entities.get("run")
    ds.out.candidates.append(
        {
            **acquisition,
            "image_id": image_id(ds.out.dataset_id, rel),
            "dataset_id": ds.out.dataset_id,
            "dataset_version": ds.version,
            "subject": name.entities.get("sub"),
            "session": name.entities.get("ses"),
            "run": int(run) if run is not None and run.isdigit() else None,
            "entities": {
                key: name.entities[key]
                for key in ENTITY_NAMES
                if key in name.entities and key not in ("sub", "ses", "run")
            },
            "source_path": rel,
            "bval_path": bval_path,
            "bvec_path": bvec_path,
            "modality": modality,
            "shape": list(header.shape),
            "spacing": list(header.spacing),
            "affine": list(header.affine),
            "orientation": header.orientation,
            "dtype": header.dtype,
            **{column: person.get(column) for column in _PERSON},
            "extra_metadata": extra,
            "license": ds.license,
        }
    )


_PERSON = ("age", "sex", "handedness", "race", "weight", "bmi", "health_status")


def _acquisition(metadata: dict[str, Any], modality: str, used: list[str]) -> dict[str, Any]:
    """The acquisition columns, sidecar extras and crawl provenance for one sidecar chain."""
    converted = []
    times: dict[str, float | None] = {}
    for key, column in _TIMES.items():
        upper = 10.0 if key == "RepetitionTime" and modality in _GRADIENT_ECHO else _UPPER[key]
        raw = metadata.get(key)
        if isinstance(raw, list):  # multi-echo sidecars list every echo time
            raw = raw[0] if raw else None
        value, from_ms = normalize_seconds(raw, upper)
        times[column] = value
        if from_ms:
            converted.append(key)
    flip = metadata.get("FlipAngle")
    parameters = {"sidecars": used, "converted_from_ms": converted}
    return {
        "manufacturer": normalize_manufacturer(metadata.get("Manufacturer")),
        "model_name": _text(metadata.get("ManufacturersModelName")),
        "magnetic_field_strength": normalize_tesla(metadata.get("MagneticFieldStrength")),
        **times,
        "flip_angle": float(flip) if isinstance(flip, int | float) else None,
        "phase_encoding_direction": _text(metadata.get("PhaseEncodingDirection")),
        "extra_metadata": {
            key: json.dumps(value, sort_keys=True)
            for key, value in sorted(metadata.items())
            if key not in _COLUMNS and not is_identifying(key)
        },
        "provenance": [
            {
                "step": "crawl",
                "method": "bids-inheritance",
                "parameters": json.dumps(parameters, sort_keys=True),
                "software": f"openmind_data {__version__}",
            }
        ],
    }


def _check_gradients(
    root: str, header: HeaderInfo, bval: str | None, bvec: str | None
) -> tuple[str, str] | None:
    if bval is None or bvec is None:
        missing = " and ".join(e for e, p in ((".bval", bval), (".bvec", bvec)) if p is None)
        return R.MISSING_GRADIENTS, f"no {missing} file applies to this series"
    volumes = header.shape[3]
    try:
        counts = (
            _count_gradients(os.path.join(root, bval), 1),
            _count_gradients(os.path.join(root, bvec), 3),
        )
    except InvalidInputError as error:
        return error.reason, f"{posixpath.basename(error.path)}: {error.detail}"
    if counts != (volumes, volumes):
        return (
            R.GRADIENT_MISMATCH,
            f"{volumes} volumes, {counts[0]} b-values and {counts[1]} b-vectors",
        )
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
