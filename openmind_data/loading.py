"""``openmind_data.load``: ``datasets.load_dataset`` on an OpenMind folder or Hub repo with
the filters people reach for (modalities, IQS, licence, split), checked against the dataset so a
typo is an error rather than an empty result. (The module is not called ``load``: importing it
would put the module where the package exports the function.)

It only builds arguments: what comes back is what ``datasets.load_dataset`` returns (a
``Dataset``, ``DatasetDict``, ``IterableDataset`` with ``streaming=True``), voxel columns decoded
to ``nibabel`` images. Filters go to the Parquet reader, which skips every row group whose
statistics rule it out; shards are sorted by IQS, so a quality threshold skips most of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from openmind_data.crawl.normalize import normalize_license
from openmind_data.dataset_folder import DATA, METADATA, DatasetFolder, shard_glob, table_path
from openmind_data.errors import ConfigError
from openmind_data.schema import SPLITS

__all__ = ["build_filters", "load"]

_NOT_MODALITIES = ("all", METADATA, "previews")

Filter = tuple[str, str, Any]


def load(
    path_or_repo: str | Path | DatasetFolder,
    *,
    modalities: str | Sequence[str] | None = None,
    max_iqs: float | None = None,
    licenses: str | Sequence[str] | None = None,
    split: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    filters: Sequence[Filter] = (),
    columns: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Load the images of ``modalities`` (all when None) with an IQS at most ``max_iqs``, under
    one of ``licenses`` (SPDX ids, any spelling the crawl understands: "cc0" is "CC0-1.0"),
    from ``split`` (both when None). ``filters`` adds more ``(column, op, value)`` conditions
    on any image-table column, all of them combined with AND; ``columns`` reads only those
    (the voxel columns are the bulk: leave them out to browse); ``options`` go to
    ``datasets.load_dataset`` as they are. Every argument is keyword-only and named, so a
    misspelt one is a ``TypeError`` rather than a silently ignored filter."""
    import datasets  # noqa: PLC0415 (datasets takes a second to import)

    load_options = dict(options or {})
    if columns is not None:
        load_options["columns"] = list(columns)

    where = DatasetFolder.at(path_or_repo, revision=revision)
    chosen = _modalities(where, modalities)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    conditions = build_filters(
        max_iqs=max_iqs,
        licenses=_licences(where, licenses),
        filters=filters,
    )
    if conditions:
        load_options["filters"] = conditions
    if len(chosen) == 1:
        name = chosen[0]
    else:
        name = "all"
        if modalities is not None:  # only those modalities' shards: no other file is opened
            load_options["data_files"] = {
                s: [f"{DATA}/{m}/{shard_glob(s)}" for m in chosen] for s in SPLITS
            }
    return datasets.load_dataset(
        where.datasets_path,
        name,
        split=split,
        streaming=streaming,
        revision=where.revision,
        **load_options,
    )


def build_filters(
    *,
    max_iqs: float | None = None,
    licenses: Sequence[str] | None = None,
    filters: Iterable[Filter] = (),
) -> list[Filter]:
    """The ``(column, op, value)`` list ``datasets``' Parquet reader takes, combined with AND.
    Licences may be spelt any way the crawl understands ("cc0" is CC0-1.0)."""
    conditions: list[Filter] = []
    if max_iqs is not None:
        if not 1.0 <= max_iqs <= 5.0:
            raise ConfigError(f"max_iqs={max_iqs}: the IQS runs from 1 (best) to 5 (worst)")
        conditions.append(("image_quality_score", "<=", float(max_iqs)))
    if licenses is not None:
        conditions.append(("license", "in", [normalize_license(x) or x for x in licenses]))
    for condition in filters:
        if not (isinstance(condition, tuple) and len(condition) == 3):
            raise ConfigError(f"a filter is a (column, op, value) tuple, not {condition!r}")
        conditions.append(condition)
    return conditions


def _modalities(where: DatasetFolder, modalities: str | Sequence[str] | None) -> list[str]:
    """The modalities asked for, each checked against the dataset's configs."""
    if modalities is None:
        return []
    import datasets  # noqa: PLC0415

    asked = [modalities] if isinstance(modalities, str) else list(modalities)
    if not asked:
        raise ConfigError("modalities is empty; pass None for every modality")
    configs = datasets.get_dataset_config_names(where.datasets_path, revision=where.revision)
    valid = sorted(c for c in configs if c not in _NOT_MODALITIES)
    for modality in asked:
        if modality not in valid:
            raise ConfigError(f"{where} has no modality {modality!r}{_hint(modality, valid)}")
    return sorted(set(asked))


def _licences(where: DatasetFolder, licenses: str | Sequence[str] | None) -> list[str] | None:
    """The licences asked for as SPDX ids, each checked against the images' licences."""
    if licenses is None:
        return None
    import pyarrow.parquet as pq  # noqa: PLC0415

    asked = [licenses] if isinstance(licenses, str) else list(licenses)
    table = pq.read_table(where.file(table_path("images")), columns=["license"])
    present = sorted({str(v) for v in table.column("license").to_pylist() if v is not None})
    chosen = []
    for licence in asked:
        spdx = normalize_license(licence) or str(licence)
        if spdx not in present:
            raise ConfigError(f"no image of {where} is under {licence!r}{_hint(spdx, present)}")
        chosen.append(spdx)
    return chosen


def _hint(value: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, valid, n=1, cutoff=0.6)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{suggestion}; the dataset has {', '.join(valid) or 'none'}"
