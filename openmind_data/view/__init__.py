"""``openmind view``: a local QC browser over a dataset folder or Hub repo.

A table of the images with filters and sorting, from the metadata tables alone; per image its
three planes with a slice slider, window and level, the masks' outlines toggled, its metrics
and their share of the IQS, its provenance and source; ratings from the keyboard into a file
that ``openmind quality calibrate --ratings`` reads (:mod:`openmind_data.view.ratings`).
Opening an image reads its shard's row group alone (:mod:`openmind_data.view.store`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmind_data.view.catalog import FILTERS, LIST_COLUMNS, Catalog
from openmind_data.view.ratings import VERDICTS, Rating, RatingsFile
from openmind_data.view.server import create_app
from openmind_data.view.store import Location, Store

__all__ = [
    "FILTERS",
    "LIST_COLUMNS",
    "VERDICTS",
    "Catalog",
    "Location",
    "Rating",
    "RatingsFile",
    "Store",
    "create_app",
    "open_viewer",
]


def open_viewer(
    source: str | Path,
    ratings: str | Path,
    *,
    model: str | Path | None = None,
    rater: str = "",
    revision: str | None = None,
) -> Any:
    """The browser's application over ``source`` (a folder, ``ORG/NAME`` or ``hf://datasets/
    ORG/NAME``), recording into ``ratings``; ``model`` explains the scores (default: the
    shipped model, which explains the scores of folders it scored)."""
    from openmind_data.quality import load_model  # noqa: PLC0415

    store = Store(source, revision=revision)
    catalog = Catalog(
        store.table("images"),
        store.table("sources"),
        RatingsFile(ratings, rater=rater),
        load_model(model),
    )
    return create_app(store, catalog)
