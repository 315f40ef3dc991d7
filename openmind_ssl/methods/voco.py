"""VoCo (Wu et al., CVPR 2024, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis") as nnssl's ``VoCoTrainer`` / ``VoCoEvaTrainer`` run it
for OpenMind, with the momentum teacher of VoCo's released code.

The stream's crop (nnssl: 256x256x64) is cut into a grid of non-overlapping *base* crops
(``base_grid``, nnssl 4x4x1, so 64^3 each); ``targets`` *target* crops of the same size are
drawn anywhere in it. The label of a (target, base) pair is the fraction of the target that the
base covers (each target's labels add up to 1). The prediction is the cosine similarity of the
two projected embeddings, through a ReLU. Per sample, the loss is

- prediction: the overlap-weighted ``-log(1 - |label - prediction|)`` over the pairs that
  overlap, divided by the sum of the labels, plus the mean squared prediction over the pairs
  that do not (VoCo's ``ce_loss``, nnssl's ``VoCoLoss.prediction_loss``);
- regularizer: the mean over the pairs of distinct base crops of their ReLU'd cosine
  similarity, which pushes the base embeddings apart towards orthogonality (nnssl's
  ``VoCoLoss.regularization_loss``).

Which branch sees what: nnssl embeds everything with one network and detaches the base
embeddings in the prediction term; here a momentum teacher (backbone + projector, an EMA of the
student, ``momentum`` 0.9 as in VoCo's code, updated after every optimizer step) embeds the base
crops for the prediction, and the student embeds the targets (prediction) and the base crops
(regularizer). With ``momentum`` 0 the teacher is the student of the current step and the loss
is nnssl's. ``symmetric`` adds VoCo's second assignment: teacher targets against student bases,
the two predictions averaged. The teacher runs in eval mode (no drop path).

- ResEnc-L: the pooled output of every encoder stage, concatenated, feeds the projector (nnssl's
  ``VoCoArchitecture``); the U-Net decoder is not used and is frozen.
- Primus-M: the backbone is built for the crop size of the grid (its position embedding has
  one entry per token of a base crop); the averaged encoder tokens feed the projector;
  ``up_projection`` is not used and is frozen.

Anonymization-aware (``method.anon_aware``): voxels inside the anonymization mask are set to 0
before the crops are cut.

Deviations from nnssl: the crops are cut on the device with per-sample generators (the same
augmentations as SimCLR's, see ``simclr.py``, applied to every base and target crop); the
prediction loss is averaged per sample and then over the batch (VoCo's code; nnssl pools the
counts of the whole batch, which would make the loss depend on how the batch is split across
ranks); the momentum teacher (not in nnssl). VoCo's code also squares the regularizer's
similarities and detaches one crop of each pair; we keep nnssl's form.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.methods.base import Batch, Loss, Method
from openmind_ssl.methods.common import Stages, cut, sample_generator, scored_input
from openmind_ssl.methods.simclr import (
    ContrastiveNet,
    augment_view,
    build_contrastive_net,
    check_view_size,
    draw_augmentation,
)

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = [
    "VoCo",
    "VoCoNet",
    "VoCoOptions",
    "base_corners",
    "orthogonality_loss",
    "overlap_fractions",
    "prediction_logits",
    "prediction_loss",
]

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class VoCoOptions:
    """VoCo's settings; defaults are nnssl's ``VoCoTrainer`` unless said otherwise:

    - ``base_grid`` (4, 4, 1): its ``base_crop_count`` (with its ``patch_size`` 256x256x64,
      ``train.patch_size`` here, base crops of 64^3);
    - ``targets`` 4: its ``target_crop_count``;
    - ``pred_weight`` / ``reg_weight`` 1 / 1: its ``pred_loss_weight`` / ``reg_loss_weight``;
    - ``momentum`` 0.9: the teacher's EMA momentum of VoCo's code (``voco_head.py``; nnssl has
      no teacher, which ``momentum`` 0 reproduces);
    - ``symmetric`` False: one assignment, student targets against teacher bases (nnssl's
      direction); True averages in teacher targets against student bases (VoCo's code);
    - ``hidden_dim`` / ``out_dim`` 2048 / 2048, ``stages`` "all": its ``VocoProjectionHead`` on
      every ResEnc stage;
    - ``augment`` True: its crop augmentations (``aug="train"``).
    """

    base_grid: Shape = (4, 4, 1)
    targets: int = 4
    pred_weight: float = 1.0
    reg_weight: float = 1.0
    momentum: float = 0.9
    symmetric: bool = False
    hidden_dim: int = 2048
    out_dim: int = 2048
    stages: Stages = "all"
    augment: bool = True

    def __post_init__(self) -> None:
        if min(self.base_grid) < 1 or self.base_grid[0] * self.base_grid[1] * self.base_grid[2] < 2:
            raise ConfigError(
                f"method.options.base_grid {self.base_grid} must be positive, with at least two"
                " base crops (the regularizer compares pairs of them)"
            )
        if self.targets < 1:
            raise ConfigError("method.options.targets must be >= 1")
        if not 0 <= self.momentum < 1:
            raise ConfigError("method.options.momentum must lie in [0, 1)")
        if self.hidden_dim < 1 or self.out_dim < 1:
            raise ConfigError("method.options.hidden_dim and out_dim must be >= 1")


# -- the network --------------------------------------------------------------------------


class VoCoNet(nn.Module):
    """The student (``backbone``, ``projector``: registered first, so ``find_backbone`` and the
    adaptation keys name the student) and a frozen momentum ``teacher`` of the same two parts,
    kept in eval mode and in the state dict (so a resumed run continues it)."""

    def __init__(self, student: ContrastiveNet) -> None:
        super().__init__()
        self.backbone = student.backbone
        self.projector = student.projector
        self.stages: Stages = student.stages
        self.adapter = student.adapter
        self.teacher = copy.deepcopy(student).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.teacher.eval()
        return self

    def embed(self, views: Tensor) -> Tensor:
        """The student's projected embeddings of ``views``."""
        features = self.adapter.pooled_features(self.backbone, views, self.stages)
        out: Tensor = self.projector(features)
        return out

    def forward(
        self, bases: Tensor, targets: Tensor, symmetric: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Student embeddings of ``bases`` and ``targets`` (one pass), the teacher's of
        ``bases``, and (``symmetric``) the teacher's of ``targets``, without gradient."""
        count = bases.shape[0]
        student = self.embed(torch.cat([bases, targets]))
        with torch.no_grad():
            if symmetric:
                teacher = self.teacher.embed(torch.cat([bases, targets]))
                teacher_bases, teacher_targets = teacher[:count], teacher[count:]
            else:
                teacher_bases, teacher_targets = self.teacher.embed(bases), None
        return student[:count], student[count:], teacher_bases, teacher_targets

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, every parameter and
        buffer of the backbone and the projector."""
        student: dict[str, Tensor] = {}
        teacher: dict[str, Tensor] = {}
        for part in ("backbone", "projector"):
            module = getattr(self, part)
            student |= dict(module.named_parameters(prefix=part))
            student |= dict(module.named_buffers(prefix=part))
        teacher |= dict(self.teacher.named_parameters())
        teacher |= dict(self.teacher.named_buffers())
        if student.keys() != teacher.keys():
            raise RuntimeError("the VoCo teacher no longer matches its student")
        for name, value in teacher.items():
            if value.is_floating_point():
                value.lerp_(student[name], 1 - momentum)
            else:
                value.copy_(student[name])


# -- crops, labels and the loss -------------------------------------------------------------


def base_corners(grid: Shape, size: Shape) -> Tensor:
    """(K, 3) corners of the base crops, C order over ``grid`` (x slowest, as nnssl)."""
    axes = [torch.arange(g) * s for g, s in zip(grid, size, strict=True)]
    return torch.cartesian_prod(*axes).view(-1, 3)


def overlap_fractions(targets: Tensor, bases: Tensor, size: Shape) -> Tensor:
    """(T, K): the fraction of each target crop (corners ``targets`` (T, 3)) that each base crop
    (corners ``bases`` (K, 3)) covers, all crops of ``size`` voxels."""
    extent = torch.tensor(size)
    low = torch.maximum(targets[:, None], bases[None])
    high = torch.minimum(targets[:, None] + extent, bases[None] + extent)
    common = (high - low).clamp_min(0).prod(dim=-1)
    return common.float() / float(extent.prod())


def prediction_logits(targets: Tensor, bases: Tensor) -> Tensor:
    """(B, T, K): ReLU of the cosine similarity of each target (B, T, D) with each base
    (B, K, D) of its sample."""
    similarity = (
        functional.normalize(targets.float(), dim=-1)
        @ functional.normalize(bases.float(), dim=-1).mT
    )
    return functional.relu(similarity)


def prediction_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample (B,): the overlap-weighted ``-log(1 - |label - logit|)`` over the pairs with
    overlap, divided by the sum of their labels, and the mean squared logit over the pairs
    without (VoCo's ``ce_loss``)."""
    labels = labels.to(logits.dtype)
    distance = (labels - logits).abs()
    positive = (-labels * torch.log(1 - distance + 1e-6)).sum(dim=(1, 2))
    positive = positive / (labels.sum(dim=(1, 2)) + 1e-6)
    empty = (labels == 0).to(logits.dtype)
    negative = (empty * logits**2).sum(dim=(1, 2)) / (empty.sum(dim=(1, 2)) + 1e-6)
    return positive, negative


def orthogonality_loss(bases: Tensor) -> Tensor:
    """Per sample (B,): the mean, over the pairs of distinct base crops (B, K, D), of their
    ReLU'd cosine similarity (0 when the base embeddings are orthogonal)."""
    unit = functional.normalize(bases.float(), dim=-1)
    similarity = functional.relu(unit @ unit.mT)
    count = bases.shape[1]
    upper = torch.ones(count, count, device=bases.device).triu(diagonal=1).bool()
    return similarity[:, upper].mean(dim=1)


class VoCo(Method):
    name = "voco"
    Options: ClassVar[type[Any]] = VoCoOptions

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__(config)
        grid = self.options.base_grid
        if any(n % g for n, g in zip(self.patch_size, grid, strict=True)):
            raise ConfigError(
                f"train.patch_size {self.patch_size} does not split into method.options.base_grid"
                f" {grid}"
            )
        check_view_size(config.model, self.network_input_size, self.patch_size, "VoCo's crops")

    @property
    def network_input_size(self) -> Shape:
        """The spatial shape the backbone sees: one base crop."""
        x, y, z = (n // g for n, g in zip(self.patch_size, self.options.base_grid, strict=True))
        return x, y, z

    def build(self) -> nn.Module:
        o = self.options
        student = build_contrastive_net(
            self.config.model, self.network_input_size, o.hidden_dim, o.out_dim, o.stages
        )
        return VoCoNet(student)

    def after_step(self, network: nn.Module) -> None:
        if not isinstance(network, VoCoNet):
            raise TypeError(f"VoCo trains a VoCoNet, not {type(network).__name__}")
        network.update_teacher(self.options.momentum)

    def crops(self, batch: Batch, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        """Base crops (B * K, 1, *size), target crops (B * T, 1, *size), samples in batch order,
        and the labels (B, T, K)."""
        o, size = self.options, self.network_input_size
        image, _ = scored_input(batch, anon_aware=self.config.method.anon_aware)
        corners = base_corners(o.base_grid, size)
        span = torch.tensor(self.patch_size) - torch.tensor(size) + 1
        bases, targets, labels = [], [], []
        with torch.autocast(image.device.type, enabled=False):
            for sample, key in zip(image.float(), batch.keys, strict=True):
                generator = sample_generator(seed, key)
                drawn = (torch.rand(o.targets, 3, generator=generator) * span).long()
                labels.append(overlap_fractions(drawn, corners, size))
                crops = [cut(sample, c, size) for c in corners.tolist()]
                crops += [cut(sample, c, size) for c in drawn.tolist()]
                if o.augment:
                    crops = [augment_view(c, draw_augmentation(generator, size)) for c in crops]
                bases += crops[: len(corners)]
                targets += crops[len(corners) :]
        return torch.stack(bases), torch.stack(targets), torch.stack(labels).to(image.device)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        o = self.options
        bases, targets, labels = self.crops(batch, seed)
        samples, count = labels.shape[0], labels.shape[2]
        student_bases, student_targets, teacher_bases, teacher_targets = model(
            bases, targets, o.symmetric
        )
        with torch.autocast(labels.device.type, enabled=False):  # similarities in float32
            student_bases = student_bases.reshape(samples, count, -1)
            logits = prediction_logits(
                student_targets.reshape(samples, o.targets, -1),
                teacher_bases.reshape(samples, count, -1),
            )
            if teacher_targets is not None:
                teacher_targets = teacher_targets.reshape(samples, o.targets, -1)
                swapped = prediction_logits(teacher_targets, student_bases)
                logits = (logits + swapped) / 2
            positive, negative = prediction_loss(logits, labels)
            regularizer = orthogonality_loss(student_bases)
            per_sample = o.pred_weight * (positive + negative) + o.reg_weight * regularizer
        weight = torch.tensor(float(samples), device=per_sample.device)
        logs = {
            "positive": float(positive.detach().mean()),
            "negative": float(negative.detach().mean()),
            "orthogonality": float(regularizer.detach().mean()),
        }
        return Loss(per_sample.sum(), weight, logs)
