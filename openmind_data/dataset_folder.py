"""One OpenMind dataset: where it is (a folder here or a dataset repo on the Hub) and where each
thing is inside it. The folder's layout is written down here and nowhere else::

    README.md                                  the dataset card (``openmind_data.card``)
    assets/*.png, assets/previews/*.png        its figures and previews
    data/<modality>/<split>-NNNNN-of-MMMMM.parquet
    previews/<split>-NNNNN-of-MMMMM.parquet    each image's preview and metadata, no voxels
    metadata/images.parquet                    the image table, no voxels
    metadata/excluded.parquet                  every candidate or image left out, with a reason
    metadata/sources.parquet                   one row per source dataset
    metadata/openneuro_metadata.csv            the released OpenMind columns
    .build/                                    the build's journal (hidden: never uploaded)
    .cache/openmind-publish-hashes.json        the publisher's file hashes (hidden too)

Shards are named as the Hub's data-file conventions expect; the ``all`` config is every
modality's shards together, so no voxel is stored twice.

A dataset is named the same way everywhere (the CLIs, ``openmind_data.load``, the QC browser,
the SSL stream's ``source``, a release to import): a folder that exists here, or a dataset repo
on the Hub as ``ORG/NAME[@REVISION]`` or ``hf://datasets/ORG/NAME[@REVISION]``. Anything else is
a :class:`ConfigError` saying which forms are understood. A Hub repo's metadata tables come
through ``huggingface_hub``'s download cache, so a second look costs nothing; its shards are
read by range through ``HfFileSystem``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from openmind_data.errors import ConfigError
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, SOURCES_SCHEMA, SPLITS, read_table

__all__ = [
    "ASSETS",
    "CARD",
    "DATA",
    "HASH_CACHE",
    "JOURNAL",
    "METADATA",
    "PREVIEWS",
    "RELEASE_CSV",
    "TABLES",
    "UPLOAD_ORDER",
    "DatasetFolder",
    "parse_repo",
    "repo_not_found",
    "shard_glob",
    "shard_name",
    "shard_split",
    "table_path",
]

CARD = "README.md"
ASSETS = "assets"
DATA = "data"
PREVIEWS = "previews"
METADATA = "metadata"
JOURNAL = ".build"
HASH_CACHE = ".cache/openmind-publish-hashes.json"
RELEASE_CSV = f"{METADATA}/openneuro_metadata.csv"
#: The metadata tables, each in its schema.
TABLES: dict[str, pa.Schema] = {
    "images": IMAGE_SCHEMA,
    "excluded": EXCLUDED_SCHEMA,
    "sources": SOURCES_SCHEMA,
}
#: What an upload sends first: shards, previews, the tables, the figures; the card comes last.
UPLOAD_ORDER = (f"{DATA}/", f"{PREVIEWS}/", f"{METADATA}/", f"{ASSETS}/")

_HUB = "hf://datasets/"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FORMS = "ORG/NAME[@REVISION] or hf://datasets/ORG/NAME[@REVISION]"


def shard_name(index: int, count: int, split: str = "train") -> str:
    """``<split>-NNNNN-of-MMMMM.parquet``: shard ``index`` of ``count``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_glob(split: str = "*") -> str:
    """The file names of ``split``'s shards (every split's with ``*``)."""
    return f"{split}-*-of-*.parquet"


def shard_split(name: str) -> str:
    """The split a shard's file name starts with."""
    return name.split("-", 1)[0]


def table_path(name: str) -> str:
    """``metadata/<name>.parquet``, one of :data:`TABLES`."""
    if name not in TABLES:
        raise ConfigError(f"no metadata table {name!r}; the tables are {', '.join(TABLES)}")
    return f"{METADATA}/{name}.parquet"


def parse_repo(address: str, revision: str | None = None) -> tuple[str, str | None]:
    """``(repo id, revision)`` of a Hub address, ``[hf://datasets/]ORG/NAME[@REVISION]``;
    ``revision`` is one asked for apart, which must not disagree with the address's."""
    text, at, pinned = address.removeprefix(_HUB).rstrip("/").partition("@")
    if not _REPO_ID.fullmatch(text) or (at and not pinned) or "@" in pinned:
        raise ConfigError(f"{address!r} is neither a folder here nor a Hub dataset repo ({_FORMS})")
    if pinned and revision is not None and revision != pinned:
        raise ConfigError(f"{address}: revision {pinned!r} in the address, {revision!r} apart")
    return text, pinned or revision


@dataclass(frozen=True)
class DatasetFolder:
    """An OpenMind dataset, here (``path``) or on the Hub (``repo_id`` at ``revision``)."""

    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @classmethod
    def at(
        cls, source: str | Path | DatasetFolder, *, revision: str | None = None
    ) -> DatasetFolder:
        """The dataset ``source`` names: a folder that exists here, else a Hub repo."""
        if isinstance(source, DatasetFolder):
            return source
        if Path(source).is_dir():
            return cls(path=Path(source), revision=revision)
        repo_id, revision = parse_repo(str(source), revision)
        return cls(repo_id=repo_id, revision=revision)

    @classmethod
    def here(cls, path: str | Path) -> DatasetFolder:
        """The folder ``path`` here, whether or not it exists yet (one to write)."""
        return cls(path=Path(path))

    # -- naming ---------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def name(self) -> str:
        """What messages call it: the folder's name, or the repo id."""
        return self.path.resolve().name if self.path is not None else str(self.repo_id)

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{_HUB}{self.repo_id}"

    @property
    def datasets_path(self) -> str:
        """What ``datasets.load_dataset`` takes for it (the revision goes apart)."""
        return str(self.path) if self.path is not None else str(self.repo_id)

    @property
    def root(self) -> str:
        """The dataset's own path in :attr:`filesystem`."""
        if self.path is not None:
            return self.path.resolve().as_posix()
        at = f"@{self.revision}" if self.revision else ""
        return f"datasets/{self.repo_id}{at}"

    @property
    def filesystem(self) -> Any:
        """An ``fsspec`` file system that reads it: the local one, or ``HfFileSystem``."""
        if self.path is not None:
            import fsspec  # type: ignore[import-untyped]  # noqa: PLC0415

            return fsspec.filesystem("file")
        from huggingface_hub import HfFileSystem  # noqa: PLC0415

        return HfFileSystem()

    def local(self, relative: str = "") -> Path:
        """``relative`` in the folder here; a Hub repo has no local files to write."""
        if self.path is None:
            raise ConfigError(f"{self}: a Hub repo; this needs a dataset folder here")
        return self.path / relative if relative else self.path

    # -- the metadata tables --------------------------------------------------------------
    def file(self, relative: str) -> Path:
        """A file of the dataset on disk here, downloaded first from a Hub repo."""
        if self.path is not None:
            path = self.path / relative
            if not path.is_file():
                raise ConfigError(f"{path} does not exist: is {self.path} an OpenMind folder?")
            return path
        from huggingface_hub import hf_hub_download  # noqa: PLC0415
        from huggingface_hub.errors import (  # noqa: PLC0415
            EntryNotFoundError,
            RepositoryNotFoundError,
        )

        try:
            downloaded = hf_hub_download(
                str(self.repo_id), relative, repo_type="dataset", revision=self.revision
            )
        except RepositoryNotFoundError as error:
            raise self._not_found() from error
        except EntryNotFoundError as error:
            raise ConfigError(
                f"{self.repo_id}: no {relative}; is it an OpenMind dataset?"
            ) from error
        return Path(downloaded)

    def table(self, name: str) -> pa.Table:
        """``metadata/<name>.parquet`` (images, excluded, sources) in its schema."""
        return read_table(self.file(table_path(name)), TABLES[name])

    # -- the shards -----------------------------------------------------------------------
    def shards(self, modality: str = "*", split: str = "*") -> list[str]:
        """The paths in :attr:`filesystem` of the shards of ``modality`` and ``split``
        (``*``: every one), sorted: the order of their rows."""
        pattern = f"{self.root}/{DATA}/{modality}/{shard_glob(split)}"
        try:
            return sorted(str(path) for path in self.filesystem.glob(pattern))
        except FileNotFoundError as error:  # HfFileSystem: no such repo, or no access
            raise self._not_found() from error

    def shard_files(self) -> dict[str, dict[str, list[str]]]:
        """Modality -> split -> its shards, sorted, as the build wrote them."""
        found: dict[str, dict[str, list[str]]] = {}
        for path in self.shards():
            modality, name = path.rsplit("/", 2)[1:]
            if shard_split(name) in SPLITS:
                found.setdefault(modality, {}).setdefault(shard_split(name), []).append(path)
        return found

    def preview_files(self) -> dict[str, list[str]]:
        """Split -> the files of the previews config, sorted, splits in their order."""
        found: dict[str, list[str]] = {}
        for path in sorted(self.filesystem.glob(f"{self.root}/{PREVIEWS}/{shard_glob()}")):
            found.setdefault(shard_split(str(path).rsplit("/", 1)[1]), []).append(str(path))
        return {split: found[split] for split in SPLITS if split in found}

    def modality_folders(self) -> Iterator[Path]:
        """The ``data/<modality>`` folders here."""
        data = self.local(DATA)
        if data.is_dir():
            yield from sorted(p for p in data.iterdir() if p.is_dir())

    def _not_found(self) -> ConfigError:
        return repo_not_found(str(self.repo_id))


def repo_not_found(repo_id: str) -> ConfigError:
    """The error for a repo id the Hub does not know (or will not show without a token)."""
    return ConfigError(
        f"{repo_id!r} is neither a folder here nor a dataset repo on the Hub "
        "(or it is private and no token was found)"
    )
