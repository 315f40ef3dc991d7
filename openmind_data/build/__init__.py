"""The build: from BIDS roots to the OpenMind dataset folder.

So far: the subject-disjoint split (:func:`assign_splits`) and duplicate detection by source
checksum (:func:`drop_duplicates`, :func:`file_sha256`), pure functions over the image table that
the build's finalize step runs; the data shards of one config (:func:`write_shards`); and the
unit of work, one candidate to its published images and their NIfTI bytes
(:func:`process_candidate`).
"""

from openmind_data.build.dedup import drop_duplicates, file_sha256
from openmind_data.build.shards import ShardOptions, shard_name, shard_schema, write_shards
from openmind_data.build.splits import SPLITS, assign_splits, split_of
from openmind_data.build.unit import Published, UnitOptions, UnitResult, process_candidate

__all__ = [
    "SPLITS",
    "Published",
    "ShardOptions",
    "UnitOptions",
    "UnitResult",
    "assign_splits",
    "drop_duplicates",
    "file_sha256",
    "process_candidate",
    "shard_name",
    "shard_schema",
    "split_of",
    "write_shards",
]
