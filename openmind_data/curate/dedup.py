"""Duplicate images across datasets: the same source bytes published once.

OpenNeuro datasets re-share files (a study's controls in a later study, a dataset re-uploaded
under a new accession). Images with the same ``source_sha256`` and the same derivation are one
image: the first by (dataset_id, source_path) is kept, the others become rows of the exclusion
table (reason ``duplicate``, stage ``build``) naming the kept one. Different derivations of one
series (its FA, MD and mean b0) share the series' checksum and are not duplicates of each other.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.schema import EXCLUDED_SCHEMA, table_from_records

__all__ = ["drop_duplicates"]


def drop_duplicates(images: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(the rows kept, the exclusion rows of the duplicates). Rows without a checksum are kept."""
    rows: list[dict[str, Any]] = images.select(
        ["dataset_id", "dataset_version", "source_path", "image_id", "source_sha256", "derivation"]
    ).to_pylist()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["dataset_id"], rows[i]["source_path"]))
    first: dict[tuple[str, str | None], int] = {}
    dropped: list[int] = []
    excluded: list[dict[str, Any]] = []
    for i in order:
        row = rows[i]
        if row["source_sha256"] is None:
            continue
        key = (row["source_sha256"], row["derivation"])
        if key not in first:
            first[key] = i
            continue
        kept = rows[first[key]]
        dropped.append(i)
        detail = f"same bytes as {kept['dataset_id']}/{kept['source_path']} ({kept['image_id']})"
        excluded.append(exclusion_row(row, R.DUPLICATE, detail, stage="build"))
    keep = sorted(set(range(len(rows))) - set(dropped))
    return images.take(pa.array(keep, type=pa.int64())), table_from_records(
        excluded, EXCLUDED_SCHEMA
    )
