"""The stage interface: an image in flight, what a stage gives back, and one pass through stages.

A :class:`Stage` has a ``name`` (the ``stage`` of the exclusion rows it causes) and a
``process(item)`` that returns an :class:`Outcome`: the items that go on to the next stage (none,
one, or several: a DWI series gives up to three maps), exclusion rows, and files to write.
Stages are pure: they read their inputs and return bytes, and the process that runs them writes,
so any executor can run them and a retry is harmless.

:func:`run_stages` takes one item through a sequence of stages. An error a stage raises for an
item becomes that item's exclusion row at the stage's name, under the error's own reason for bad
input (:class:`~openmind_data.errors.InvalidInputError`) and ``processing_error`` for anything
else; the item's siblings go on. :class:`UnitResult` is what a pass returns to the process that
runs it: the arrays stay behind, only rows and bytes travel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason, exclusion_row
from openmind_data.nifti import edit_stored

if TYPE_CHECKING:
    from openmind_data.masks.stage import MaskedImage

__all__ = ["Item", "Outcome", "Published", "Stage", "UnitResult", "exclusion_for", "run_stages"]

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One image on its way through the stages: its image-table row so far and, once read, its
    voxels. ``source`` is the file to read and ``root`` the folder its row's paths are relative
    to (a BIDS dataset); ``like`` the nibabel image whose grid and header the
    voxels share; ``raw`` the voxels in their stored type and ``data`` in their scaled values
    (``scaling`` is the slope and intercept between them); ``masked`` the masks stage's result;
    ``voxels`` the NIfTI bytes of the columns to publish and ``preview`` its PNG."""

    row: dict[str, Any]
    source: Path | None = None
    root: Path | None = None
    like: Any = None
    raw: NDArray[Any] | None = None
    data: NDArray[Any] | None = None
    scaling: tuple[float, float] = (1.0, 0.0)
    masked: MaskedImage | None = None
    voxels: dict[str, bytes] = field(default_factory=dict)
    preview: bytes | None = None

    @property
    def where(self) -> str:
        """How errors name the item: its file, and which map of it for a derived image."""
        derivation = self.row.get("derivation")
        return f"{self.source} ({derivation})" if derivation else str(self.source)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(z) for z in self.like.header.get_zooms()[:3])

    def stored(self) -> NDArray[Any]:
        """The voxels to publish in their stored type: the source's bits, with the toolkit's
        defacing written back in stored units where it defaced; float32 for computed voxels
        (a DWI map), which have no stored type of their own."""
        data = self.masked.data if self.masked is not None else self.data
        if self.raw is None:
            return np.asarray(data, dtype=np.float32)
        if self.masked is not None and self.masked.defaced_here:
            assert self.data is not None
            return edit_stored(self.raw, self.data, self.masked.data, self.scaling)
        return self.raw


@dataclass
class Outcome:
    """What a stage gives back for one item (see the module's docstring). ``files`` maps a
    path, relative to the command's output folder, to its bytes."""

    items: list[Item] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


class Stage(Protocol):
    """One step of the pipeline; see the module's docstring."""

    @property
    def name(self) -> str:
        """The stage's name: the ``stage`` of the exclusion rows it causes."""
        ...

    def process(self, item: Item) -> Outcome: ...


@dataclass
class Published:
    """One image to publish: its image-table row, its voxel columns (``image``, ``anat_mask``,
    ``anon_mask``, ``brain_mask`` where made) as NIfTI bytes, and its preview PNG."""

    row: dict[str, Any]
    voxels: dict[str, bytes] = field(default_factory=dict)
    preview: bytes | None = None


@dataclass
class UnitResult:
    """One pass's result: the images it gives, its exclusion rows, and the files to write."""

    published: list[Published] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


def exclusion_for(row: dict[str, Any], error: Exception, stage: str) -> dict[str, Any]:
    """The exclusion row of an item a stage raised ``error`` for: bad input under its own
    reason, anything else a ``processing_error`` quoting it (its traceback in the debug log)."""
    if isinstance(error, InvalidInputError):
        return exclusion_row(row, error.reason, error.detail, stage=stage)
    log.debug("%s failed at %s:", row.get("source_path"), stage, exc_info=error)
    detail = f"{type(error).__name__}: {error}"
    return exclusion_row(row, ExclusionReason.PROCESSING_ERROR, detail, stage=stage)


def run_stages(stages: Sequence[Stage], item: Item) -> UnitResult:
    """``item`` through ``stages`` in turn (see the module's docstring). Never raises for one
    image's sake."""
    items, result = [item], UnitResult()
    for stage in stages:
        following: list[Item] = []
        for current in items:
            try:
                outcome = stage.process(current)
            except Exception as error:  # noqa: BLE001 - one image must not stop the others
                result.excluded.append(exclusion_for(current.row, error, stage.name))
                continue
            following.extend(outcome.items)
            result.excluded.extend(outcome.excluded)
            result.files.update(outcome.files)
        items = following
    result.published = [Published(i.row, i.voxels, i.preview) for i in items]
    return result
