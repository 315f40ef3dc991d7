from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openmind_data.errors import SchemaError
from openmind_data.exclusions import ExclusionReason
from openmind_data.modalities import modality_names
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    IMAGE_SCHEMA,
    IQM_COLUMNS,
    RELEASED_COLUMNS,
    SCHEMA_VERSION,
    SHARD_SCHEMA,
    SOURCES_SCHEMA,
    VOXEL_COLUMNS,
    describe,
    key_values,
    read_table,
    table_from_records,
    write_table,
)

ALL = [IMAGE_SCHEMA, SHARD_SCHEMA, EXCLUDED_SCHEMA, SOURCES_SCHEMA]


def _image_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "image_id": "om-0123456789abcdef",
        "dataset_id": "ds000001",
        "dataset_version": "1.0.2",
        "subject": "01",
        "session": "1",
        "run": 1,
        "entities": {"acq": "MPRAGE"},
        "source_path": "sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.nii.gz",
        "modality": "T1w",
        "shape": [176, 256, 256],
        "spacing": [1.0, 1.0, 1.0],
        "affine": [1.0, 0, 0, -88, 0, 1, 0, -128, 0, 0, 1, -128, 0, 0, 0, 1],
        "magnetic_field_strength": 3.0,
        "age": 25.5,
        "sex": "F",
        "license": "CC0-1.0",
        "image_quality_score": 1.5,
        "provenance": [
            {"step": "crawl", "method": "header", "parameters": "{}", "software": "openmind 0.1.0"}
        ],
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize("schema", ALL, ids=lambda s: s.metadata[b"openmind.table"].decode())
def test_every_column_is_described_and_versioned(schema: pa.Schema) -> None:
    assert schema.metadata[b"openmind.schema_version"].decode() == SCHEMA_VERSION
    assert schema.metadata[b"openmind.bids_version"]
    for name, _type, description in describe(schema):
        assert len(description) > 10, f"{name} needs a description"
    assert len(set(schema.names)) == len(schema.names)


def test_released_openmind_columns_are_kept() -> None:
    assert set(RELEASED_COLUMNS) <= set(IMAGE_SCHEMA.names)
    for added in (
        "image_id",
        "dataset_id",
        "dataset_version",
        "subject",
        "session",
        "run",
        "source_path",
        "source_sha256",
        "shape",
        "spacing",
        "license",
        "split",
        "provenance",
        *IQM_COLUMNS,
    ):
        assert added in IMAGE_SCHEMA.names


def test_shard_voxel_columns_use_the_datasets_nifti_layout() -> None:
    from datasets.features import Nifti

    for name in VOXEL_COLUMNS:
        assert SHARD_SCHEMA.field(name).type == Nifti().pa_type
    assert SHARD_SCHEMA.names[: len(IMAGE_SCHEMA)] == IMAGE_SCHEMA.names


def test_parquet_round_trip_keeps_descriptions_and_version(tmp_path: Path) -> None:
    table = table_from_records([_image_row(), _image_row(image_id="om-2", run=None)], IMAGE_SCHEMA)
    path = tmp_path / "images.parquet"
    write_table(table, path)
    back = read_table(path, IMAGE_SCHEMA)
    assert back.schema.equals(IMAGE_SCHEMA, check_metadata=True)
    assert describe(back.schema) == describe(IMAGE_SCHEMA)
    assert key_values(back.to_pylist()[0]["entities"]) == {"acq": "MPRAGE"}
    assert back.column("run").to_pylist() == [1, None]
    # Also what any Parquet reader sees, without this toolkit:
    raw = pq.read_schema(path)
    assert raw.metadata[b"openmind.schema_version"] == SCHEMA_VERSION.encode()
    assert raw.field("age").metadata[b"description"].startswith(b"Age in years")


def test_unknown_keys_and_missing_required_values_are_errors() -> None:
    with pytest.raises(SchemaError, match="imagepath"):
        table_from_records([_image_row(imagepath="x")], IMAGE_SCHEMA)
    with pytest.raises(SchemaError, match="'modality'"):
        table_from_records([_image_row(modality=None)], IMAGE_SCHEMA)
    with pytest.raises(SchemaError, match="'run'"):
        table_from_records([_image_row(run="first")], IMAGE_SCHEMA)


def test_read_table_checks_which_table_and_version(tmp_path: Path) -> None:
    excluded = table_from_records(
        [
            {
                "dataset_id": "ds000001",
                "source_path": "sub-01/anat/x.nii.gz",
                "stage": "crawl",
                "reason": ExclusionReason.ZERO_BYTE.value,
                "detail": "file is empty",
            }
        ],
        EXCLUDED_SCHEMA,
    )
    path = tmp_path / "excluded.parquet"
    write_table(excluded, path)
    with pytest.raises(SchemaError, match="'excluded' table, expected 'images'"):
        read_table(path, IMAGE_SCHEMA)
    future = excluded.replace_schema_metadata(
        {
            **excluded.schema.metadata,
            b"openmind.schema_version": f"{int(SCHEMA_VERSION.split('.')[0]) + 1}.0.0".encode(),
        }
    )
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(SchemaError, match="not readable"):
        read_table(tmp_path / "future.parquet", EXCLUDED_SCHEMA)
    with pytest.raises(SchemaError, match="schema_version"):
        write_table(pa.table({"a": [1]}), tmp_path / "bare.parquet")


def test_vocabularies_fit_the_schema() -> None:
    table = table_from_records([_image_row(modality=m) for m in modality_names()], IMAGE_SCHEMA)
    assert table.column("modality").to_pylist() == modality_names()


@pytest.mark.parametrize(
    "schema",
    [IMAGE_SCHEMA, SHARD_SCHEMA, EXCLUDED_SCHEMA, SOURCES_SCHEMA],
    ids=lambda s: s.metadata[b"openmind.table"].decode(),
)
def test_every_table_has_a_datasets_feature_for_every_column(schema: pa.Schema) -> None:
    """What the Hub and load_dataset need: datasets has no feature for an Arrow map, hence the
    key/value pair lists."""
    features = datasets.Features.from_arrow_schema(schema)
    assert list(features) == schema.names
    if "entities" in features:
        assert features["entities"] == datasets.List(
            {"key": datasets.Value("string"), "value": datasets.Value("string")}
        )


def test_key_value_columns_take_dicts_and_give_them_back() -> None:
    table = table_from_records(
        [_image_row(entities={"run": "2", "acq": "x"}), _image_row(entities=None)], IMAGE_SCHEMA
    )
    first, second = table.column("entities").to_pylist()
    assert first == [{"key": "acq", "value": "x"}, {"key": "run", "value": "2"}]  # sorted
    assert key_values(first) == {"acq": "x", "run": "2"} and key_values(second) == {}
