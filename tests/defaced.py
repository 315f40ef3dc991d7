"""A hand-made batch for the anonymization-aware tests: random crops with a defaced band."""

from __future__ import annotations

import torch

from openmind_ssl.methods import Batch

__all__ = ["defaced_batch"]


def defaced_batch(seed: int = 1, anon_noise: float | None = None, anatomy_gap: int = 0) -> Batch:
    """Two 32^3 crops whose anonymization mask is the band ``[:, :, :, :12]``. ``anon_noise``
    replaces the voxels there by noise of that scale (None keeps the crops' own values);
    ``anatomy_gap`` leaves the first slices out of the anatomy mask."""
    image = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(seed))
    anon = torch.zeros_like(image)
    anon[:, :, :, :12] = 1
    if anon_noise is not None:
        noise = anon_noise * torch.randn(image.shape, generator=torch.Generator().manual_seed(9))
        image = torch.where(anon > 0, noise, image)
    anatomy = torch.ones_like(image)
    anatomy[:, :, :anatomy_gap] = 0
    return Batch(image=image, anat_mask=anatomy, anon_mask=anon, keys=[3, 4])
