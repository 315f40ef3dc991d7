"""An import in a child process that kills itself with SIGKILL after its N-th journal batch.

``python tests/import_child.py SOURCE OUT N``: import the T1w images of SOURCE with a released
IQS of at most 2 into OUT, a journal batch per image, two downloads at a time, and SIGKILL this
process right after the N-th batch is committed. The wrapper only counts and kills: the import
runs unchanged, and no clean-up code gets a chance to run.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from openmind_data.curate import BuildOptions, journal
from openmind_data.release.importer import import_release


def main() -> None:
    source, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    original = journal.Journal.commit
    calls = {"n": 0}

    def commit(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    journal.Journal.commit = commit  # type: ignore[method-assign]
    import_release(
        source,
        out,
        modalities=["T1w"],
        max_iqs=2.0,
        build=BuildOptions(journal_units=1),
        download_workers=2,
    )


if __name__ == "__main__":
    main()
