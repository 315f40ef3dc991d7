"""A build in a child process that kills itself with SIGKILL at a chosen point.

``python tests/build_child.py ROOT OUT POINT N``: build ROOT into OUT with two local processes
and a journal batch per unit, and SIGKILL this process:

- ``commit``: right after the N-th journal batch is committed (between images);
- ``in-commit``: after the journal's N-th flush (a commit flushes its three files and its
  folder, renames it into place, then flushes the batches folder: 5 flushes a commit);
- ``in-shard``: inside the first shard with more than N row groups, after the N-th;
- ``in-metadata``: after the N-th metadata table is written under its temporary name;
- ``never``: not at all.

The wrappers only count and kill: the build code runs unchanged. SIGKILL leaves no chance to
clean up, as when a machine loses power or the out-of-memory killer strikes.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from openmind_data.curate import (
    BuildOptions,
    ShardOptions,
    build,
    folder,
    journal,
    make_executor,
    shards,
)

KIB = 1 << 10


def _after(n: int, original: Any) -> Any:
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapped


def _killing_after_groups(n: int, original: Any) -> Any:
    """A shard writer whose row groups are handed over until ``n`` are written."""

    def wrapped(path: Any, groups: Any, schema: Any) -> Any:
        def counted() -> Any:
            for written, group in enumerate(groups):
                if written == n:  # the writer has written n row groups and asks for more
                    os.kill(os.getpid(), signal.SIGKILL)
                yield group

        return original(path, counted(), schema)

    return wrapped


def main(root: str, out: str, point: str, n: int) -> None:
    if point == "commit":
        journal.Journal.commit = _after(n, journal.Journal.commit)  # type: ignore[method-assign]
    elif point == "in-commit":
        # The batch's files are flushed one by one before the folder is renamed into place.
        journal.fsync_path = _after(n, journal.fsync_path)
    elif point == "in-shard":
        shards.write_parquet = _killing_after_groups(n, shards.write_parquet)
    elif point == "in-metadata":
        folder.write_table = _after(n, folder.write_table)
    elif point != "never":
        raise SystemExit(f"unknown kill point {point!r}")
    options = BuildOptions(
        shards=ShardOptions(row_group_bytes=64 * KIB, shard_bytes=256 * KIB), journal_units=1
    )
    executor = make_executor(workers=2)
    try:
        result = build(root, out, options, executor=executor)
    finally:
        executor.close()
    print(f"run={result.run} resumed={result.resumed}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
