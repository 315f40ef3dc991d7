"""Fine-tuning on a CUDA device: bf16 autocast in training and in the sliding-window evaluation.
Marked ``gpu`` (deselected by default; ``pytest -m gpu`` where a GPU is)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from openmind_ssl.finetune.config import finetune_config
from openmind_ssl.finetune.synthetic import write_segmentation_task
from openmind_ssl.finetune.trainer import Finetuner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("architecture", ["resenc_l", "primus_m"])
def test_a_bf16_run_on_the_gpu_trains_and_evaluates(architecture: str, tmp_path: Path) -> None:
    task = write_segmentation_task(tmp_path / "lesions", cases=6, voxel_mm=2.0)
    model = {"architecture": architecture}
    if architecture == "resenc_l":
        model |= {"features_per_stage": [16, 32, 64, 128], "blocks_per_stage": [1, 2, 2, 2]}
    else:
        model |= {"embed_dim": 192, "depth": 4, "num_heads": 4}
    raw = {
        "task": {"kind": "segmentation", "path": str(task), "spacing": 2.0},
        "model": model,
        "schedule": {"name": "sawtooth", "epochs": 6, "decoder_epochs": 2, "warmup_epochs": 2},
        "train": {"steps_per_epoch": 10, "patch_size": [64, 64, 64], "amp": "bf16",
                  "workers": 2, "out": str(tmp_path / "run"), "progress": False},
    }  # fmt: skip
    trainer = Finetuner(finetune_config(raw))
    assert trainer.device.type == "cuda" and trainer.autocast_dtype is torch.bfloat16
    result = trainer.fit()
    assert all(math.isfinite(loss) for loss in result.losses)
    assert 0 <= result.evaluation["value"] <= 1
