"""VolumeFusion (Wang et al., "MIS-FM: 3D Medical Image Segmentation using Foundation Models
Pretrained on a Large-Scale Unannotated Dataset", arXiv 2306.16925): segment fusion weights.

Two crops are fused voxel-wise, ``(1 - w) * a + w * b``, where ``w`` is painted with random
boxes placed one after another (later boxes overwrite earlier ones, so the regions take
irregular shapes), each box with a weight drawn from {0, 1/4, 1/2, 3/4, 1}; outside every box
``w`` is 0 (the first crop alone). The network predicts the weight's class per voxel, a
five-class segmentation trained with soft Dice plus cross-entropy, as nnssl's
``VolumeFusionTrainer``. Crop ``a`` is sample ``i`` of the local batch and ``b`` sample
``i + 1`` (mod the batch); a batch of one crop is fused with the crop flipped along all three
axes. The boxes and weights are drawn from sample ``i``'s generator.

- ResEnc-L: the U-Net with five output channels.
- Primus-M: the plain transformer (every token visible) with a five-channel patch decoder, as
  nnssl's ``VolumeFusionEvaTrainer``.

The number of boxes is uniform in [10, 40), their edges uniform from 8 voxels to 62.5% of the
crop's (nnssl's reading of the paper's ranges at 64 x 128 x 128 as fractions of the crop).
There is no anonymization-aware variant (neither in nnssl nor in the paper): the method refuses
``method.anon_aware`` and ``method.anatomy_only``.

Deviations from nnssl, and why:

- Partners. nnssl loads twice the batch and fuses its first half with its second; here the
  batch is the network's batch and each crop is fused with its neighbour, so the trainer's
  batch size is the number of fused crops the network sees, as with every other method. The
  partner therefore depends on the local batch (on a rank with one crop, its own flip).
- The Dice term is ``1 - Dice`` (nnssl returns ``-Dice``): the same gradient, and a perfect
  prediction scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.methods.base import Batch, Loss, Method
from openmind_ssl.methods.common import sample_generator

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = [
    "Fusion",
    "FusionOptions",
    "VolumeFusion",
    "dice_ce",
    "fuse",
    "fusion_labels",
    "fusion_weights",
    "sample_fusion",
]

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class FusionOptions:
    """nnssl's ``VolumeFusionTrainer`` values: 5 fusion classes (weights ``linspace(0, 1,
    5)``), a box count uniform in [10, 40), box edges from 8 voxels to ``int(0.625 * edge)``
    (both included), Dice smoothing 1e-5 (per sample, over every class, background included)."""

    classes: int = 5
    box_count: tuple[int, int] = (10, 40)  # [min, max): max excluded
    box_min: int = 8  # voxels
    box_max_fraction: float = 0.625  # of the crop's edge
    smooth: float = 1e-5

    def __post_init__(self) -> None:
        if self.classes < 2:
            raise ConfigError("method.options.classes must be >= 2")
        low, high = self.box_count
        if not 0 <= low < high:
            raise ConfigError("method.options.box_count must be [min, max) with 0 <= min < max")
        if self.box_min < 1 or not 0.0 < self.box_max_fraction <= 1.0:
            raise ConfigError(
                "method.options.box_min must be >= 1 and box_max_fraction lie in (0, 1]"
            )
        if self.smooth < 0:
            raise ConfigError("method.options.smooth must be >= 0")


@dataclass(frozen=True)
class Fusion:
    """One fused crop's boxes, painted in order: ``origins`` and ``sizes`` (K, 3) int64 and
    ``classes`` (K,) int64, the class of each box's fusion weight."""

    origins: Tensor
    sizes: Tensor
    classes: Tensor


def sample_fusion(shape: Shape, options: FusionOptions, generator: torch.Generator) -> Fusion:
    """The boxes of one fused crop of ``shape``: their number, sizes, places and classes."""
    low, high = options.box_count
    count = int(torch.randint(low, high, (1,), generator=generator).item())
    edges = torch.tensor(shape)
    smallest = edges.clamp(max=options.box_min)
    largest = torch.maximum((edges * options.box_max_fraction).long(), smallest)
    uniform = torch.rand(count, 3, generator=generator, dtype=torch.float64)
    sizes = smallest + (uniform * (largest - smallest + 1)).long()
    uniform = torch.rand(count, 3, generator=generator, dtype=torch.float64)
    origins = (uniform * (edges - sizes + 1)).long()
    classes = torch.randint(0, options.classes, (count,), generator=generator)
    return Fusion(origins, sizes, classes)


def fusion_labels(shape: Shape, fusion: Fusion, device: torch.device | None = None) -> Tensor:
    """int64 (X, Y, Z): the class of the last box over each voxel, 0 outside every box."""
    labels = torch.zeros(shape, dtype=torch.long, device=device)
    boxes = zip(
        fusion.origins.tolist(), fusion.sizes.tolist(), fusion.classes.tolist(), strict=True
    )
    for (x, y, z), (sx, sy, sz), label in boxes:
        labels[x : x + sx, y : y + sy, z : z + sz] = label
    return labels


def fusion_weights(labels: Tensor, classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The fusion weight of each voxel's class: ``linspace(0, 1, classes)[labels]``."""
    return torch.linspace(0.0, 1.0, classes, dtype=dtype, device=labels.device)[labels]


def fuse(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """``(1 - w) * a + w * b`` voxel-wise."""
    return (1 - weights) * a + weights * b


def dice_ce(logits: Tensor, labels: Tensor, smooth: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per sample (B,): the cross-entropy of ``logits`` (B, C, X, Y, Z) against ``labels``
    (B, X, Y, Z), averaged over the voxels, and the soft Dice of their softmax, averaged over
    the C classes (a class absent from both the prediction and the labels scores 1)."""
    logits = logits.float()
    ce = functional.cross_entropy(logits, labels, reduction="none").flatten(1).mean(dim=1)
    probs = logits.softmax(dim=1)
    onehot = torch.zeros_like(probs).scatter_(1, labels.unsqueeze(1), 1.0)
    axes = tuple(range(2, probs.ndim))
    intersect = (probs * onehot).sum(axes)
    total = probs.sum(axes) + onehot.sum(axes)
    dice = ((2 * intersect + smooth) / (total + smooth).clamp_min(1e-8)).mean(dim=1)
    return ce, dice


class VolumeFusion(Method):
    name = "volume_fusion"
    Options = FusionOptions

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__(config)
        method = self.config.method
        if method.anon_aware or method.anatomy_only:
            raise ConfigError(
                "method.anon_aware / method.anatomy_only: volume_fusion has no such variant "
                "(it segments fusion weights, defined on every voxel); set them to false"
            )

    def build(self) -> nn.Module:
        options = cast(FusionOptions, self.options)
        return self.backbone.build(self.config.model, self.patch_size, num_classes=options.classes)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        options = cast(FusionOptions, self.options)
        a = batch.image
        b = a.roll(-1, dims=0) if a.shape[0] > 1 else a.flip(dims=(2, 3, 4))
        shape = cast(Shape, tuple(a.shape[2:]))
        fusions = [sample_fusion(shape, options, sample_generator(seed, key)) for key in batch.keys]
        labels = torch.stack([fusion_labels(shape, fusion, a.device) for fusion in fusions])
        weights = fusion_weights(labels, options.classes, a.dtype).unsqueeze(1)
        logits = model(fuse(a, b, weights))
        ce, dice = dice_ce(logits, labels, options.smooth)
        total = (ce + 1 - dice).sum()
        count = torch.tensor(float(len(batch.keys)), device=a.device)
        return Loss(
            total, count, {"ce": float(ce.detach().mean()), "dice": float(dice.detach().mean())}
        )
