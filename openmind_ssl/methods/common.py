"""Pieces several methods share: per-sample random generators, the anonymization-aware input
and score masks, and the backbone's pooled features."""

from __future__ import annotations

import numpy as np
import torch

from openmind_ssl.methods.base import Batch
from openmind_ssl.models import Primus, ResEncL

__all__ = ["feature_dim", "pooled_features", "sample_generator", "scored_input"]


def sample_generator(seed: int, key: int, *salt: int) -> torch.Generator:
    """A CPU generator for one sample of one step (``key``: its global index), the same on
    every rank and worker layout; ``salt`` separates independent draws of one sample."""
    entropy = np.random.SeedSequence([seed, key, *salt]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


def scored_input(
    batch: Batch, *, anon_aware: bool, anatomy_only: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image the network sees and the 0/1 map of voxels a reconstruction loss scores.
    Anonymization-aware: voxels inside the anonymization mask are set to 0 (the mean after
    z-scoring) and never scored, so whatever a defacing tool left there cannot matter."""
    image, scored = batch.image, torch.ones_like(batch.image)
    if anon_aware:
        scored = 1 - batch.anon_mask
        image = image * scored
    if anatomy_only:
        scored = scored * batch.anat_mask
    return image, scored


def feature_dim(backbone: ResEncL | Primus) -> int:
    """Channels of :func:`pooled_features`."""
    if isinstance(backbone, Primus):
        return backbone.embed_dim
    return backbone.encoder.output_channels[-1]


def pooled_features(backbone: ResEncL | Primus, x: torch.Tensor) -> torch.Tensor:
    """(B, feature_dim): the encoder's deepest features averaged over space (ResEnc-L) or over
    the tokens (Primus)."""
    if isinstance(backbone, Primus):
        return backbone.encode(x).mean(dim=1)
    deepest: torch.Tensor = backbone.encoder(x)[-1]
    return deepest.mean(dim=(2, 3, 4))
