"""The Arrow schemas of OpenMind's tables: the image table, the exclusion table, the sources table.

This module is the API. Every column carries a description in its field metadata, and every schema
carries the schema version and the BIDS version it targets in its metadata, so a Parquet file the
toolkit writes explains itself. Column names keep the names of OpenMind's released
``openneuro_metadata.csv`` where one exists (:data:`RELEASED_COLUMNS`), so tools written for the
release keep working.

The image table has one row per published 3D image; the crawl's candidate table uses the same
schema (one row per candidate, a DWI series included). Data shards add the payload columns
(:data:`PAYLOAD_COLUMNS`): the voxel columns (:data:`VOXEL_COLUMNS`), each a NIfTI-1 ``.nii.gz``
byte string in the struct layout of the ``datasets.Nifti`` feature, and the row's preview, a
small PNG in the layout of the ``datasets.Image`` feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.errors import SchemaError

__all__ = [
    "BIDS_VERSION",
    "EXCLUDED_SCHEMA",
    "IGNORED_SCHEMA",
    "IMAGE_SCHEMA",
    "IQM_COLUMNS",
    "KEY_VALUE",
    "PAYLOAD_COLUMNS",
    "PREVIEWS_SCHEMA",
    "PREVIEW_COLUMN",
    "PROVENANCE_TYPE",
    "RELEASED_COLUMNS",
    "SCHEMA_VERSION",
    "SHARD_SCHEMA",
    "SOURCES_SCHEMA",
    "SPLITS",
    "VOXEL_COLUMNS",
    "describe",
    "key_values",
    "read_table",
    "table_from_records",
    "write_table",
]

#: Bumped in its major part when a column is removed, renamed or changes type; in its minor part
#: when a column is added. Readers accept tables of the same major version.
SCHEMA_VERSION = "2.4.0"
#: The BIDS specification version whose entities and suffixes the tables follow.
BIDS_VERSION = "1.10.0"
#: The values of the ``split`` column, in the order shards, configs and cards list them.
SPLITS = ("train", "validation")

_KEY_VERSION = b"openmind.schema_version"
_KEY_TABLE = b"openmind.table"
_KEY_BIDS = b"openmind.bids_version"


def _f(name: str, type_: pa.DataType, description: str, *, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


def _schema(table: str, fields: Sequence[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={_KEY_VERSION: SCHEMA_VERSION, _KEY_TABLE: table, _KEY_BIDS: BIDS_VERSION},
    )


_STR = pa.string()
_CAT = pa.dictionary(pa.int32(), pa.string())
_F32 = pa.float32()
#: String-to-string metadata as key/value pairs: what an Arrow map is underneath, and unlike a map
#: a type the ``datasets`` library (and so the Hub and ``load_dataset``) can represent.
KEY_VALUE = pa.list_(
    pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
)

#: One processing step: what was done, how, with which parameters (JSON) and software versions.
PROVENANCE_TYPE = pa.struct(
    [
        pa.field("step", _STR, nullable=False),
        pa.field("method", _STR, nullable=False),
        pa.field("parameters", _STR),
        pa.field("software", _STR),
    ]
)

#: The image-quality metrics behind the IQS, MRIQC-style, computed over the image's own masks.
IQM_COLUMNS: dict[str, str] = {
    "iqm_snr": "Signal-to-noise ratio (MRIQC's snr_total): mean over CSF, grey and white matter "
    "of each tissue's median over its SD.",
    "iqm_cnr": "Contrast-to-noise ratio (MRIQC's cnr): grey/white matter contrast over the "
    "tissues' and the air's SDs; null where tissue classes cannot be estimated (e.g. FA, MD).",
    "iqm_efc": "Entropy focus criterion (MRIQC's efc, Atkinson et al. 1997); higher means more "
    "ghosting/blur.",
    "iqm_fber": "Foreground-to-background energy ratio (MRIQC's fber): median squared head "
    "intensity over median squared air intensity.",
    "iqm_cjv": "Coefficient of joint variation of grey and white matter (MRIQC's cjv); null "
    "where tissue classes cannot be estimated.",
    "iqm_qi1": "Share of the air's voxels that are artefacts (MRIQC's qi_1, Mortamet et al. 2009).",
    "iqm_inu": "Intensity non-uniformity: 5-95th percentile spread of the estimated bias field "
    "inside the brain over its median (close to MRIQC's inu_range).",
    "iqm_ghost": "Ghosting/motion indicator: signal in the phase-encode ghost band over "
    "foreground signal (no MRIQC counterpart for T1w/T2w).",
    "iqm_fwhm": "Smoothness in voxels, averaged over the axes (MRIQC's fwhm_avg, AFNI's "
    "3dFWHMx estimator); higher means blurrier.",
    "iqm_wm2max": "Median white matter intensity over the image's 99.95th percentile (MRIQC's "
    "wm2max).",
    "iqm_icvs_wm": "White matter's share of the brain's tissue voxels (MRIQC's icvs_wm).",
}

_IMAGE_FIELDS: list[pa.Field] = [
    # -- identity ------------------------------------------------------------------------------
    _f(
        "image_id",
        _STR,
        "Stable, deterministic identifier of the image: a hash of dataset id, "
        "source path and derivation. The same input always gets the same id.",
        nullable=False,
    ),
    _f("dataset_id", _STR, "Source dataset accession, e.g. 'ds000001'.", nullable=False),
    _f("dataset_version", _STR, "Source dataset version or snapshot tag, e.g. '1.0.2'."),
    _f("subject", _STR, "BIDS subject label, without 'sub-'."),
    _f("session", _STR, "BIDS session label, without 'ses-'; null when the dataset has none."),
    _f("run", pa.int32(), "BIDS run index; null when the file has none."),
    _f(
        "entities",
        KEY_VALUE,
        "Every other BIDS entity of the source file (acq, ce, rec, dir, echo, "
        "part, inv, ...) as key/value pairs sorted by key, label without its key.",
    ),
    _f(
        "source_path",
        _STR,
        "Path of the source file relative to its dataset root, POSIX separators.",
        nullable=False,
    ),
    _f("source_sha256", _STR, "SHA-256 of the source file's bytes, hex."),
    _f("bval_path", _STR, "DWI candidates: the .bval file, relative to the dataset root."),
    _f("bvec_path", _STR, "DWI candidates: the .bvec file, relative to the dataset root."),
    _f(
        "derived_from",
        _STR,
        "For an image computed from another file (a DWI map): that file as "
        "'<dataset>/<path in the source dataset>'; null for images published as acquired.",
    ),
    _f(
        "derivation",
        _STR,
        "What was computed for a derived image: 'md', 'fa' or 'mean_b0'; null otherwise.",
    ),
    # -- released layout -----------------------------------------------------------------------
    _f(
        "image_path",
        _STR,
        "Path of the image in the released OpenMind layout, "
        "'<dataset>/sub-*/[ses-*/]anat/<name>.nii.gz' ('dwi/' for maps of a DWI series).",
    ),
    _f(
        "unique_id",
        _STR,
        "OpenMind's own identifier of an imported image (openneuro_metadata.csv's "
        "unique_id, which starts with the dataset id); null for an image this toolkit built.",
    ),
    _f("anat_mask_path", _STR, "Path of the anatomy mask in the released layout."),
    _f("anon_mask_path", _STR, "Path of the anonymization (deface) mask in the released layout."),
    _f("brain_mask_path", _STR, "Path of the brain mask in the released layout, where made."),
    _f(
        "brain_mask_backend",
        _CAT,
        "What made the brain mask: 'deepbet', 'hd-bet', 'template' (registered MNI152 "
        "head model), or 'image' (the image is a brain extract); null where none was made.",
    ),
    # -- what the image is ---------------------------------------------------------------------
    _f(
        "modality",
        _CAT,
        "Modality, from the vocabulary in openmind_data.modalities.",
        nullable=False,
    ),
    _f(
        "is_brain_extract",
        pa.bool_(),
        "True when the image shows only the brain (skull-stripped "
        "by the uploader), judged from the image itself.",
    ),
    _f(
        "defacing",
        _CAT,
        "How the face was removed: 'source' (defaced by the uploader: the facial zone "
        "holds no tissue), 'toolkit' (defaced by this build), 'brain_extract', "
        "'out_of_view' (the field of view holds no facial zone), or 'none' (not defaced, "
        "by policy).",
    ),
    _f(
        "anon_brain_overlap",
        _F32,
        "Share of a brain estimate independent of the defacing inside the anonymization "
        "mask: above 0.005 the image is excluded or flagged (deface_hits_brain).",
    ),
    _f(
        "qc_flags",
        pa.list_(_STR),
        "Problems found by the checks, e.g. 'deface_hits_brain'; empty when none.",
    ),
    # -- geometry (from the header alone) ------------------------------------------------------
    _f("shape", pa.list_(pa.int32()), "Voxel grid size; four values for a DWI candidate."),
    _f("spacing", pa.list_(_F32), "Voxel size in millimetres along each spatial axis."),
    _f(
        "affine",
        pa.list_(pa.float64(), 16),
        "Voxel-to-world (RAS+, mm) transform, row-major "
        "4x4, as the NIfTI header gives it (sform, else qform).",
    ),
    _f("orientation", _STR, "Axis codes of the voxel grid, e.g. 'RAS', 'LPS', 'PIR'."),
    _f("dtype", _STR, "On-disk voxel data type, e.g. 'int16', 'float32'."),
    # -- acquisition (sidecars, BIDS inheritance applied) --------------------------------------
    _f("manufacturer", _CAT, "Scanner manufacturer, normalised spelling (e.g. 'Siemens')."),
    _f("model_name", _STR, "Scanner model (ManufacturersModelName)."),
    _f("magnetic_field_strength", _F32, "Main field strength in tesla."),
    _f("repetition_time", _F32, "Repetition time in seconds."),
    _f("echo_time", _F32, "Echo time in seconds (first echo where several)."),
    _f("inversion_time", _F32, "Inversion time in seconds."),
    _f("flip_angle", _F32, "Flip angle in degrees."),
    _f("phase_encoding_direction", _STR, "BIDS PhaseEncodingDirection, e.g. 'j-'."),
    # -- participant (participants.tsv, sessions.tsv, phenotype/) ------------------------------
    _f("age", _F32, "Age in years at the session; null when unknown or not a number."),
    _f("sex", _CAT, "'M', 'F' or 'O'; null when unknown."),
    _f("handedness", _CAT, "'R', 'L' or 'A' (ambidextrous); null when unknown."),
    _f("race", _STR, "As the source dataset states it."),
    _f("weight", _F32, "Body weight in kilograms."),
    _f("bmi", _F32, "Body-mass index in kg/m^2."),
    _f(
        "health_status",
        _STR,
        "Group or diagnosis as the source dataset states it (e.g. 'healthy', 'patient').",
    ),
    _f(
        "extra_metadata",
        KEY_VALUE,
        "Sidecar and participant fields that fit no column, as key/value pairs "
        "sorted by key, values as JSON; identifying fields are never kept.",
    ),
    # -- licence and split ---------------------------------------------------------------------
    _f(
        "license",
        _CAT,
        "Licence of the source dataset, normalised (e.g. 'CC0-1.0', "
        "'CC-BY-4.0', 'PDDL-1.0'); see metadata/sources.parquet for attribution.",
    ),
    _f("split", _CAT, "'train' or 'validation'; subject-disjoint, from a fixed seed."),
    # -- quality -------------------------------------------------------------------------------
    _f(
        "image_quality_score",
        _F32,
        "Image quality score, 1 (best) to 5 (worst), from the IQMs "
        "by the model named in iqs_model.",
    ),
    _f("iqs_model", _STR, "Name and version of the model that turned the IQMs into the IQS."),
    _f(
        "released_quality_score",
        _F32,
        "The score OpenMind's release gave this image's "
        "(dataset, modality) group, where a user imported it.",
    ),
    *(_f(name, _F32, description) for name, description in IQM_COLUMNS.items()),
    # -- provenance ----------------------------------------------------------------------------
    _f(
        "provenance",
        pa.list_(PROVENANCE_TYPE),
        "Every step that made or changed this row or "
        "its voxels, in order: step, method, parameters (JSON) and software versions.",
    ),
]

IMAGE_SCHEMA = _schema("images", _IMAGE_FIELDS)

_FILE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", _STR)])

#: Voxel columns of the data shards, in the layout of the ``datasets.Nifti`` feature.
VOXEL_COLUMNS: dict[str, str] = {
    "image": "The image, a NIfTI-1 .nii.gz in its native grid and data type.",
    "anat_mask": "Anatomy mask (uint8, 0/1) in the image's grid: where there is anatomy.",
    "anon_mask": "Anonymization mask (uint8, 0/1) in the image's grid: voxels removed by "
    "defacing; all zero when the image was not defaced.",
    "brain_mask": "Brain mask (uint8, 0/1) in the image's grid, where made.",
}

#: The preview column of the data shards, in the layout of the ``datasets.Image`` feature.
PREVIEW_COLUMN = "preview"
_PREVIEW_DESCRIPTION = (
    "A PNG of at most 40 KB: the sagittal, coronal and axial planes through the anatomy's "
    "centre, the anatomy (green), anonymization (red) and brain (cyan) masks outlined."
)
#: The shard columns beyond the image table: the voxel columns, then the preview.
PAYLOAD_COLUMNS: tuple[str, ...] = (*VOXEL_COLUMNS, PREVIEW_COLUMN)

SHARD_SCHEMA = _schema(
    "shard",
    [
        *_IMAGE_FIELDS,
        *(_f(name, _FILE, description) for name, description in VOXEL_COLUMNS.items()),
        _f(PREVIEW_COLUMN, _FILE, _PREVIEW_DESCRIPTION),
    ],
)

#: The previews table (``previews/``, the dataset viewer's config): each row's preview first,
#: then its image-table columns; no voxels.
PREVIEWS_SCHEMA = _schema(
    "previews", [_f(PREVIEW_COLUMN, _FILE, _PREVIEW_DESCRIPTION), *_IMAGE_FIELDS]
)

EXCLUDED_SCHEMA = _schema(
    "excluded",
    [
        _f("dataset_id", _STR, "Source dataset accession.", nullable=False),
        _f("dataset_version", _STR, "Source dataset version or snapshot tag."),
        _f(
            "source_path",
            _STR,
            "Path of the excluded file relative to its dataset root.",
            nullable=False,
        ),
        _f(
            "image_id",
            _STR,
            "The image id, when the file was a candidate before it was "
            "excluded; null for files excluded by the crawl.",
        ),
        _f(
            "stage",
            _CAT,
            "Where it was excluded: 'crawl', 'import', 'load', 'dwi', 'masks', 'quality' or "
            "'build'.",
            nullable=False,
        ),
        _f(
            "reason",
            _CAT,
            "Reason code, from openmind_data.exclusions.ExclusionReason.",
            nullable=False,
        ),
        _f("detail", _STR, "What exactly was wrong, for a person to read.", nullable=False),
    ],
)

SOURCES_SCHEMA = _schema(
    "sources",
    [
        _f("dataset_id", _STR, "Source dataset accession.", nullable=False),
        _f("dataset_version", _STR, "Version or snapshot tag."),
        _f("name", _STR, "Name from dataset_description.json."),
        _f("license", _STR, "Licence, normalised to an SPDX-like identifier; null when missing."),
        _f("license_raw", _STR, "Licence exactly as dataset_description.json gives it."),
        _f("authors", pa.list_(_STR), "Authors, in the order the dataset lists them."),
        _f("doi", _STR, "Dataset DOI (DatasetDOI), normalised to 'doi:10.xxx/...'."),
        _f("bids_version", _STR, "BIDSVersion the dataset declares."),
        _f("how_to_acknowledge", _STR, "HowToAcknowledge, as given."),
        _f("references_and_links", pa.list_(_STR), "ReferencesAndLinks, as given."),
        _f("funding", pa.list_(_STR), "Funding, as given."),
    ],
)

IGNORED_SCHEMA = _schema(
    "ignored",
    [
        _f("dataset_id", _STR, "Source dataset accession.", nullable=False),
        _f("path", _STR, "File or folder relative to the dataset root.", nullable=False),
        _f("kind", _CAT, "'file', or 'directory' for a folder not descended into.", nullable=False),
        _f(
            "rule",
            _CAT,
            "Why it was left aside: 'metadata:sidecar', 'datatype:func', "
            "'derivatives', 'hidden', ...",
            nullable=False,
        ),
    ],
)

#: Columns of OpenMind's released ``openneuro_metadata.csv``, all present in IMAGE_SCHEMA.
RELEASED_COLUMNS: tuple[str, ...] = (
    "unique_id", "image_path", "anat_mask_path", "anon_mask_path", "modality",
    "image_quality_score", "derived_from", "is_brain_extract", "manufacturer", "model_name",
    "magnetic_field_strength", "repetition_time", "echo_time", "phase_encoding_direction", "age",
    "sex", "handedness", "race", "weight", "bmi", "health_status",
)  # fmt: skip


def describe(schema: pa.Schema) -> list[tuple[str, str, str]]:
    """``(name, arrow type, description)`` for every column, in schema order."""
    return [
        (f.name, str(f.type), (f.metadata or {}).get(b"description", b"").decode()) for f in schema
    ]


def key_values(value: Any) -> dict[str, str | None]:
    """A key/value column's cell (pairs, as a table gives them) as a dict; null as empty."""
    return {pair["key"]: pair["value"] for pair in value or []}


def _as_pairs(row: Mapping[str, Any], columns: list[str]) -> Mapping[str, Any]:
    """``row`` with dict values of key/value columns turned into sorted key/value pairs."""
    if not any(isinstance(row.get(c), Mapping) for c in columns):
        return row
    out = dict(row)
    for column in columns:
        value = out.get(column)
        if isinstance(value, Mapping):
            out[column] = [{"key": k, "value": value[k]} for k in sorted(value)]
    return out


def table_from_records(records: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from dict rows.

    A key that is not a column is an error (a typo must not drop data silently); a missing key is
    null; a null in a non-nullable column is an error naming the column. A key/value column
    (``KEY_VALUE``) takes a dict, stored as its pairs sorted by key.
    """
    pairs = [field.name for field in schema if field.type == KEY_VALUE]
    rows = [_as_pairs(row, pairs) for row in records]
    names = set(schema.names)
    for i, row in enumerate(rows):
        if not names.issuperset(row):
            unknown = sorted(set(row) - names)
            raise SchemaError(
                f"row {i} has keys that are not columns of the "
                f"{_table_name(schema)} table: {unknown}"
            )
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        table = None
    if table is None:  # find the column to name in the error
        for field in schema:
            try:
                pa.array([row.get(field.name) for row in rows], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
                raise SchemaError(f"column {field.name!r}: {error}") from error
        raise SchemaError(f"rows do not fit the {_table_name(schema)} table")
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(
                f"column {field.name!r} of the {_table_name(schema)} table must not be null"
            )
    return table


def write_table(table: pa.Table, path: str | Path, **parquet_options: Any) -> None:
    """Write a table to Parquet (its folder made if needed), keeping descriptions and
    versions; no wall-clock times."""
    _check_version(table.schema, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"compression": "zstd", "write_statistics": True}
    options.update(parquet_options)
    pq.write_table(table, str(path), **options)


def read_table(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """Read a table the toolkit wrote; with ``schema``, check it is that table and version."""
    table = pq.read_table(str(path))
    if schema is not None:
        expected = _table_name(schema)
        found = _table_name(table.schema)
        if found != expected:
            raise SchemaError(f"{path}: holds the {found!r} table, expected {expected!r}")
        _check_version(table.schema, str(path))
        missing = [name for name in schema.names if name not in table.schema.names]
        if missing and _older_minor(table.schema):  # written before these columns existed
            for name in missing:
                field = schema.field(name)
                if not field.nullable:
                    raise SchemaError(f"{path}: missing column {name!r}")
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        elif missing:
            raise SchemaError(f"{path}: missing columns {missing}")
        # Parquet renames nested fields (list items become 'element'); cast back to the
        # declared types. Columns of a newer minor version are kept, after the known ones.
        extra = [name for name in table.schema.names if name not in schema.names]
        known = table.select(schema.names).cast(schema)
        for name in extra:
            known = known.append_column(table.schema.field(name), table.column(name))
        table = known
    return table


def _table_name(schema: pa.Schema) -> str:
    name: bytes = (schema.metadata or {}).get(_KEY_TABLE, b"<unknown>")
    return name.decode()


def _older_minor(schema: pa.Schema) -> bool:
    found = (schema.metadata or {}).get(_KEY_VERSION, b"0.0.0").decode().split(".")
    return int(found[1]) < int(SCHEMA_VERSION.split(".")[1])


def _check_version(schema: pa.Schema, where: str) -> None:
    version = (schema.metadata or {}).get(_KEY_VERSION)
    if version is None:
        raise SchemaError(
            f"{where}: no {_KEY_VERSION.decode()} in the schema metadata; "
            "build tables with openmind_data.schema"
        )
    if version.decode().split(".")[0] != SCHEMA_VERSION.split(".", maxsplit=1)[0]:
        raise SchemaError(
            f"{where}: schema version {version.decode()} is not readable by this "
            f"toolkit (schema {SCHEMA_VERSION}); use a matching openmind version"
        )
