"""Spatial and intensity augmentations of a crop, as MONAI dictionary transforms, replayable:
each sample carries the seed its transforms drew from (``augment_seed``), and applying
``augment(sample, options, seed)`` again gives the same tensors.

Masks move with the image (nearest-neighbour, so they stay 0/1); intensity changes touch the
image only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

__all__ = ["Augmentation", "augment"]

KEYS = ("image", "anat_mask", "anon_mask")


@dataclass(frozen=True)
class Augmentation:
    rotation_degrees: float = 15.0  # about each axis, uniform in +-this
    scale: float = 0.1  # zoom uniform in 1 +- this
    spatial_prob: float = 0.5  # of the rotation and scaling together
    mirror_prob: float = 0.5  # per axis
    intensity_scale: float = 0.1  # multiply by 1 + uniform(+-this)
    intensity_shift: float = 0.1  # add uniform(+-this) (z-scored units)
    intensity_prob: float = 0.5  # for each of the two

    def __post_init__(self) -> None:
        probabilities = (self.spatial_prob, self.mirror_prob, self.intensity_prob)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError(f"probabilities must lie in [0, 1]: {probabilities}")


def augment(sample: dict[str, Any], options: Augmentation, seed: int) -> dict[str, Any]:
    """``sample`` with its ``image``/``anat_mask``/``anon_mask`` (C, X, Y, Z tensors)
    transformed by the transforms ``options`` describe, drawn from ``seed``; masks back in
    their own dtype, and ``augment_seed`` recorded."""
    transforms = _transforms(options)
    transforms.set_random_state(seed)
    moved = transforms({key: sample[key] for key in KEYS})
    out = dict(sample)
    for key in KEYS:
        value = torch.as_tensor(moved[key]).as_subclass(torch.Tensor)
        out[key] = value if key == "image" else (value > 0.5).to(sample[key].dtype)
    out["augment_seed"] = seed
    return out


@lru_cache(maxsize=8)
def _transforms(options: Augmentation) -> Any:
    """One Compose per options (building them costs more than applying them to a crop)."""
    from monai.transforms import (  # noqa: PLC0415 (MONAI takes seconds to import)
        Compose,
        RandAffined,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    angle = math.radians(options.rotation_degrees)
    keys = list(KEYS)
    return Compose(
        [
            RandAffined(
                keys=keys,
                mode=("bilinear", "nearest", "nearest"),
                prob=options.spatial_prob,
                rotate_range=(angle, angle, angle),
                scale_range=(options.scale,) * 3,
                padding_mode="zeros",
            ),
            *(
                RandFlipd(keys=keys, prob=options.mirror_prob, spatial_axis=axis)
                for axis in range(3)
            ),
            RandScaleIntensityd(
                keys="image", factors=options.intensity_scale, prob=options.intensity_prob
            ),
            RandShiftIntensityd(
                keys="image", offsets=options.intensity_shift, prob=options.intensity_prob
            ),
        ]
    )
