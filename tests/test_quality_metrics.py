"""Image-quality metrics on the synthetic quality ladder, over the generator's own masks (the
masks themselves are tested in test_masks.py)."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import pytest

from openmind_data.quality.metrics import image_quality_metrics
from openmind_data.schema import IQM_COLUMNS
from openmind_data.synth import Collection


def metrics_of(collection: Collection, record: dict[str, Any], modality: str | None = None) -> Any:
    image = nib.load(collection.root / record["path"])
    masks = {
        name: np.asarray(nib.load(collection.root / path).dataobj) > 0
        for name, path in record["truth_masks"].items()
    }
    return image_quality_metrics(
        image.get_fdata(dtype=np.float32),
        masks["anatomy"],
        masks.get("anon", np.zeros_like(masks["anatomy"])),
        masks["brain"],
        modality=modality or record["modality"],
        spacing=image.header.get_zooms(),
    )


@pytest.fixture(scope="module")
def ladder(collection: Collection) -> dict[str, list[tuple[int, dict[str, float | None]]]]:
    """Degradation -> [(severity, metrics)], clean scans under 'clean' with severity 0."""
    out: dict[str, list[tuple[int, dict[str, float | None]]]] = {}
    for record in collection.files("image"):
        if record["dataset_id"] != "ds000005":
            continue
        kind = record.get("degradation") or "clean"
        out.setdefault(kind, []).append((record["severity"], metrics_of(collection, record)))
    return {k: sorted(v, key=lambda item: item[0]) for k, v in out.items()}


def values(ladder: Any, kind: str, column: str) -> list[float]:
    return [m[column] for _, m in ladder[kind]]


def test_every_metric_is_a_column_and_present_on_a_head(ladder: Any) -> None:
    _, metrics = ladder["clean"][0]
    assert set(metrics) == set(IQM_COLUMNS)
    assert all(value is not None for value in metrics.values())


@pytest.mark.parametrize(
    ("kind", "column", "worse"),
    [
        ("noise", "iqm_snr", "lower"),
        ("noise", "iqm_fber", "lower"),
        ("ghosting", "iqm_ghost", "higher"),
        # QI1 is MRIQC's: these faint synthetic ghosts stay under its 10-SD threshold on the
        # sampling grid. Its response to a real ghosted head is in test_quality_mriqc.py.
        ("motion", "iqm_ghost", "higher"),
        ("blur", "iqm_cnr", "lower"),
    ],
)
def test_a_metric_follows_the_severity_of_its_degradation(
    ladder: Any, kind: str, column: str, worse: str
) -> None:
    clean = values(ladder, "clean", column)
    graded = values(ladder, kind, column)
    assert len(graded) >= 3
    sign = 1.0 if worse == "higher" else -1.0
    steps = np.diff([sign * v for v in graded])
    assert (steps > 0).all(), (column, graded)
    assert sign * graded[0] > max(sign * c for c in clean), (column, clean, graded)


def test_a_stronger_bias_field_raises_the_non_uniformity(ladder: Any) -> None:
    clean = values(ladder, "clean", "iqm_inu")
    graded = values(ladder, "bias", "iqm_inu")
    assert (np.diff(graded) > 0).all(), graded
    assert graded[0] > max(clean) and graded[-1] > 1.3 * max(clean), (clean, graded)


def test_metrics_that_do_not_apply_are_null(collection: Collection) -> None:
    stripped = next(f for f in collection.files("image") if f.get("is_brain_extract"))
    metrics = metrics_of(collection, stripped)
    # No air left around a brain extract: nothing to measure the noise against (MRIQC's SNR
    # is the tissues' own, and CNR takes an air SD of 0, as MRIQC's would there).
    assert metrics["iqm_fber"] is None
    assert metrics["iqm_qi1"] is None and metrics["iqm_ghost"] is None
    assert metrics["iqm_efc"] is not None and metrics["iqm_cnr"] is not None
    assert metrics["iqm_snr"] is not None

    series = next(f for f in collection.files("image") if f["modality"] == "DWI")
    fa = {**series, "path": series["truth_masks"]["fa"]}
    metrics = metrics_of(collection, fa, modality="FA")
    assert metrics["iqm_cnr"] is None and metrics["iqm_cjv"] is None
    assert metrics["iqm_snr"] is None and metrics["iqm_wm2max"] is None
