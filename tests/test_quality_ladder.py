"""The issue's correctness bar: the shipped IQS orders the synthetic degradations by severity.

Ladders are rendered here, from seeds and subjects the shipped model was not fitted on
(scripts/fit_default_iqs.py uses the collection of seed 1): for each contrast and two
subjects, the same head at severity 0 (clean) to 3 of every degradation. Each image goes
through the toolkit's own masks (template brain mask, defacing found in the voxels) and the
metrics, then the shipped model. Spearman's rho between severity and IQS must reach 0.9 within
each (degradation, contrast) for noise, blur, bias and ghosting, and every clean image must
score better than every severe one. Motion is held to a lower bar (see its test).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from openmind_data.executors import map_ordered
from openmind_data.masks import MaskOptions, brain_masker, mask_image
from openmind_data.quality import image_quality_metrics, load_model
from openmind_data.synth.artifacts import DEGRADATIONS
from openmind_data.synth.geometry import plan_grid
from openmind_data.synth.render import AnatomySpec, render_anatomy, subject_transform

CONTRASTS = ("T1w", "T2w", "FLAIR")
SUBJECTS = (0, 1)
KINDS = tuple(DEGRADATIONS)  # noise, blur, bias, ghosting, motion
REQUIRED = ("noise", "blur", "bias", "ghosting")  # the list
Case = tuple[str, int, str | None, int]


def _measure(case: Case) -> tuple[Case, dict[str, float | None]]:
    contrast, subject, kind, severity = case
    grid = plan_grid((2.4, 2.4, 2.4), "RAS")
    pose = subject_transform(np.random.default_rng(4242 + subject))
    spec = AnatomySpec(
        contrast, grid, pose, degradation=kind, severity=severity, deface="quickshear"
    )
    image = render_anatomy(spec, np.random.default_rng(9000 + subject))
    masked = mask_image(
        image.data,
        image.grid.affine,
        image.grid.spacing,
        MaskOptions(brain="template"),
        brain_masker("template"),
        where=f"{contrast} {kind} {severity}",
    )
    metrics = image_quality_metrics(
        masked.data,
        masked.anatomy,
        masked.anon,
        masked.brain,
        modality=contrast,
        spacing=image.grid.spacing,
    )
    return case, metrics


@pytest.fixture(scope="module")
def scores() -> dict[Case, float]:
    cases: list[Case] = [(c, s, None, 0) for c in CONTRASTS for s in SUBJECTS]
    cases += [(c, s, k, v) for c in CONTRASTS for s in SUBJECTS for k in KINDS for v in (1, 2, 3)]
    model = load_model()
    measured = map_ordered(_measure, cases, workers=2, desc="ladder", unit="image")
    out = {}
    for case, metrics in measured:
        score = model.score(metrics, case[0])
        assert score is not None, case
        out[case] = score
    return out


def _table(scores: dict[Case, float], contrast: str, kind: str) -> str:
    return "; ".join(
        f"subject {s}: "
        + " ".join(f"{scores[(contrast, s, kind if v else None, v)]:.2f}" for v in range(4))
        for s in SUBJECTS
    )


def _rho(scores: dict[Case, float], contrast: str, kind: str) -> float:
    severity, iqs = [], []
    for subject in SUBJECTS:
        for level in range(4):
            severity.append(level)
            iqs.append(scores[(contrast, subject, kind if level else None, level)])
    return float(spearmanr(severity, iqs).statistic)


@pytest.mark.parametrize("contrast", CONTRASTS)
@pytest.mark.parametrize("kind", REQUIRED)
def test_the_score_orders_each_degradation_by_severity(
    scores: dict[Case, float], contrast: str, kind: str
) -> None:
    rho = _rho(scores, contrast, kind)
    assert rho >= 0.9, f"{contrast} {kind}: rho {rho:.2f}; {_table(scores, contrast, kind)}"


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_motion_is_ranked_too_if_less_sharply(scores: dict[Case, float], contrast: str) -> None:
    """Motion is not in the issue's list: random phase errors on k-space lines make two
    neighbouring severities of one head hard to tell apart, so the bar is lower (the note
    reports the figures); the most severe case must still be the worst of its head."""
    rho = _rho(scores, contrast, "motion")
    assert rho >= 0.8, f"{contrast} motion: rho {rho:.2f}; {_table(scores, contrast, 'motion')}"
    for subject in SUBJECTS:
        ladder = [scores[(contrast, subject, "motion" if v else None, v)] for v in range(4)]
        assert ladder[3] == max(ladder) and ladder[0] == min(ladder), ladder


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_every_clean_image_scores_better_than_every_severe_one(
    scores: dict[Case, Any], contrast: str
) -> None:
    """Within a contrast: each is measured against its own prior (T1w against ABIDE's real
    scans, the others against the synthetic collection), so levels differ between them."""
    clean = {case: s for case, s in scores.items() if case[2] is None and case[0] == contrast}
    severe = {case: s for case, s in scores.items() if case[3] == 3 and case[0] == contrast}
    worst_clean = max(clean, key=clean.__getitem__)
    best_severe = min(severe, key=severe.__getitem__)
    assert clean[worst_clean] < severe[best_severe], (worst_clean, best_severe)
    assert max(clean.values()) < 2.0  # a clean image reads as good on the 1-5 scale
