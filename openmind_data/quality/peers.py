"""References from an image's peers: the images of its modality, and of its source dataset.

MRIQC's own validation (Esteban et al. 2017) found its metrics to vary more between sites
than between good and bad scans, so a score is only as good as the reference it is measured
against. Here an image is standardized against robust statistics of its peers, in two levels:

1. *modality*: every image of its modality in the table (the collection being built);
2. *dataset*: the images of its modality in its own source dataset (an OpenNeuro dataset, an
   MRIQC "site"), where there are at least ``model.min_peers`` of them with the metric; for
   the metrics the acquisition sets (``model.dataset_metrics``: FWHM, SNR, CNR, FBER) only.

Each level is drawn towards the one above it (the modality towards the model's prior) as if
the level above had contributed ``model.prior_images`` images: with ``n`` peers, the median is
``(n m + k m0) / (n + k)`` and the squared scale the same mixture of squared scales. A
dataset of a handful of images is therefore scored mostly against the level above, a large
one mostly against itself.

Why not every metric against the dataset: a dataset whose every image is bad looks less bad
against itself. ABIDE has such sites (Stanford: 38 of 40 scans excluded by its raters). With
every metric referenced against the site, ABIDE's held-out sites rank their own scans well
and the pooled ranking suffers; with only the acquisition's metrics, both hold
(benchmarks/quality_ratings.py). The artefact measures are still drawn towards the whole
collection, which corrects the toolkit's units against the prior's without cancelling any one
dataset's artefacts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openmind_data.quality.model import IqsModel, Reference, robust_reference, turned_values

__all__ = ["PeerReferences", "peer_references", "peer_scores"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class PeerReferences:
    """Per row of the table: its references, and how many peers each level had."""

    references: list[dict[str, Reference]]
    peers: list[dict[str, int]]  # {"dataset": n, "modality": n}, the largest over metrics


def _dataset_of(row: Row) -> str:
    return str(row.get("dataset_id") or "")


def peer_references(
    rows: Sequence[Row], model: IqsModel, group_of: Callable[[Row], str] = _dataset_of
) -> PeerReferences:
    """The references each row is scored against (see the module's docstring)."""
    modalities = [str(row["modality"]) for row in rows]
    groups = [(group_of(row), modality) for row, modality in zip(rows, modalities, strict=True)]
    by_modality = turned_values(rows, modalities)
    by_group = turned_values(rows, groups)
    levels: dict[str, dict[str, Reference]] = {}
    for modality, metrics in by_modality.items():
        levels[modality] = {}
        for column in model.weights:
            prior = model.prior(modality, column)
            values = metrics.get(column, [])
            if prior is not None:
                levels[modality][column] = _drawn(column, values, prior, model)
    own: dict[tuple[str, str], dict[str, Reference]] = {}
    for group, metrics in by_group.items():
        above = levels[group[1]]
        own[group] = {
            column: (
                _drawn(column, metrics.get(column, []), reference, model)
                if column in model.dataset_metrics
                else reference
            )
            for column, reference in above.items()
        }
    counts = {
        group: {
            "dataset": max((len(v) for v in by_group[group].values()), default=0),
            "modality": max((len(v) for v in by_modality[group[1]].values()), default=0),
        }
        for group in by_group
    }
    return PeerReferences([own[g] for g in groups], [counts[g] for g in groups])


def peer_scores(
    rows: Sequence[Row], model: IqsModel, group_of: Callable[[Row], str] = _dataset_of
) -> list[float | None]:
    """Each row's IQS against its peers (see :func:`peer_references`)."""
    found = peer_references(rows, model, group_of)
    return [
        model.score(row, str(row["modality"]), references)
        for row, references in zip(rows, found.references, strict=True)
    ]


def _drawn(column: str, values: list[float], prior: Reference, model: IqsModel) -> Reference:
    """The peers' reference drawn towards ``prior``; the prior itself below ``min_peers``."""
    n, k = len(values), model.prior_images
    if n < model.min_peers:
        return prior
    peer = robust_reference(column, values)
    median = (n * peer.median + k * prior.median) / (n + k)
    scale = ((n * peer.scale**2 + k * prior.scale**2) / (n + k)) ** 0.5
    return Reference(median, scale, n)
