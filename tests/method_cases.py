"""What the pretraining and method tests share: a tiny run's config (shrunken networks, 32^3
crops at 3 mm of the synthetic T1w images) and a hand-made batch with a defaced band."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from openmind_ssl.methods import Batch
from openmind_ssl.train.config import PretrainConfig, load_config

__all__ = ["TINY_MODEL", "defaced_batch", "method_config", "tiny_run", "write_config"]

TINY_MODEL = {
    "resenc_l": {"features_per_stage": [4, 8, 16, 16], "blocks_per_stage": [1, 1, 1, 1]},
    "primus_m": {"embed_dim": 48, "depth": 2, "num_heads": 2, "decoder_depth": 1},
}


def tiny_run(
    folder: Path | str, out: Path, architecture: str = "resenc_l", **sections: dict[str, Any]
) -> dict[str, Any]:
    """A run on ``folder``'s T1w crops with a shrunken network, as the YAML mapping;
    ``sections`` update its sections (``method={"name": "simmim"}``)."""
    raw: dict[str, Any] = {
        "data": {
            "source": str(folder),
            "modalities": ["T1w"],
            "spacing": 3.0,
            "crops_per_volume": 2,
            "shuffle_buffer": 2,
            "workers": 0,
            "augment": False,
        },
        "model": {"architecture": architecture, **TINY_MODEL[architecture]},
        "method": {"mask_ratio": 0.75},
        "optim": {},
        "train": {
            "epochs": 2,
            "steps_per_epoch": 3,
            "batch_size": 2,
            "patch_size": [32, 32, 32],
            "out": str(out),
            "progress": False,
            "checkpoint_every": 1,
        },
    }
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def method_config(name: str, architecture: str, *overrides: str) -> PretrainConfig:
    """Method ``name`` on the shrunken ``architecture`` (Primus with its default MAE decoder
    depth), 32^3 crops, batch 2; ``overrides`` as ``--set`` takes them, applied last."""
    size = [
        f"model.{key}={json.dumps(value)}"
        for key, value in TINY_MODEL[architecture].items()
        if key != "decoder_depth"
    ]
    return load_config(
        None,
        [
            f"method.name={name}",
            f"model.architecture={architecture}",
            "train.patch_size=[32, 32, 32]",
            "train.batch_size=2",
            *size,
            *overrides,
        ],
    )


def write_config(raw: dict[str, Any], path: Path) -> PretrainConfig:
    """``raw`` written to ``path`` as YAML and read back as a run's config."""
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


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
