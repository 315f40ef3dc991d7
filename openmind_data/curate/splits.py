"""The subject-disjoint train/validation split.

A subject's split is decided by a hash of the seed, its dataset and its label alone, so it is
the same on every machine, for every executor, and does not move when other datasets or
subjects join a later build: only the new subjects are drawn. Every image of a subject (all its
sessions, runs, contrasts and DWI maps) lands in the same split. The validation share is the
hash threshold; over many subjects the realised share is close to it (a binomial draw), not
exact.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from openmind_data.errors import ConfigError
from openmind_data.schema import SPLITS

__all__ = ["SPLITS", "assign_splits", "split_of"]


def split_of(dataset_id: str, subject: str | None, *, validation: float, seed: int) -> str:
    """'validation' or 'train' for one subject (a row without a subject label is its own
    subject, keyed by whatever the caller passes)."""
    key = f"{seed}\x1f{dataset_id}\x1f{subject}".encode()
    draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
    return "validation" if draw < validation else "train"


def assign_splits(images: pa.Table, *, validation: float = 0.1, seed: int = 0) -> pa.Table:
    """``images`` with its ``split`` column set, subject-disjoint (see the module's docstring).
    A row without a subject is keyed by its source path, so it never joins another's split."""
    if not 0.0 <= validation < 1.0:
        raise ConfigError(f"the validation share must be in [0, 1), got {validation}")
    rows = images.select(["dataset_id", "subject", "source_path"]).to_pylist()
    splits = [
        split_of(
            r["dataset_id"],
            r["subject"] if r["subject"] is not None else f"path:{r['source_path']}",
            validation=validation,
            seed=seed,
        )
        for r in rows
    ]
    index = images.schema.get_field_index("split")
    column = pa.array(splits, type=pa.string())
    field = images.schema.field(index)
    if pa.types.is_dictionary(field.type):
        column = column.dictionary_encode().cast(field.type)
    return images.set_column(index, field, column)
