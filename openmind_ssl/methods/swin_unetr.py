"""The SwinUNETR pretraining recipe (Tang et al., CVPR 2022) on ResEnc-L and Primus-M.

Each sample gives two views of its crop (the whole crop, as nnssl and the MONAI reference do, or
two random sub-volumes of ``view_size``). Each view is turned by a random multiple of 90 degrees
in the plane of the last two axes (nnssl's ``rot_rand``: ``rot90`` over the sample's axes 2, 3)
and then has random boxes cut out and filled with noise (``patch_rand_drop``: up to
``max_drop`` = 30% of the voxels, boxes of 5% to 25% of each edge, Gaussian noise rescaled to
[0, 1] in each box). One forward pass of the two cut-out views of every sample returns three
things (:class:`SwinUNETRNetwork`):

- inpainting: the backbone's reconstruction of the rotated view before the cut-out (ResEnc-L's
  U-Net decoder; Primus' patch decoder), scored by the L1 distance on every voxel;
- rotation: ``rotation_head``, a linear 4-way classifier of the pooled encoder features
  (ResEnc-L: bottleneck averaged over space; Primus: tokens averaged), cross-entropy with the
  view's number of quarter turns;
- contrast: ``contrastive_head``, a linear projection (512) of the pooled features; NT-Xent
  (InfoNCE over cosine similarities, temperature 0.5) with the other view of the same sample as
  the positive and the other views of the local batch as negatives.

The loss is their sum with equal weights (nnssl and MONAI both use 1, 1, 1), averaged over the
samples: each sample contributes the mean of its two views' terms.

Anonymization-aware (``method.anon_aware``): voxels inside the anonymization mask are set to 0
before the views are made and are not scored by the inpainting loss (``anatomy_only`` also
restricts that score to the anatomy mask); the rotation and contrastive terms see only the
zeroed input, so no term depends on what a defacing tool left there.

Deviations from nnssl (and MONAI), and why:

* The reconstruction is the backbone's own output (U-Net decoder with skips on ResEnc-L, patch
  decoder on Primus) instead of a separate up-sampling head on the bottleneck: every backbone
  weight then trains (DDP needs a gradient for each) and the checkpoint is a whole dna network.
  The skips make uncut voxels easy to copy; the cut-out boxes still have to be inpainted.
* The rotation and contrastive heads read the mean-pooled features; nnssl and MONAI feed them
  the first and second bottleneck token only (MONAI research-contributions issue #87).
* Only the noise round of the cut-out: MONAI's second round pastes boxes of another sample of
  the batch, which would make a view depend on how the batch is split over ranks. The paper's
  stated drop rate (30%) is what remains.
* Every random choice comes from the sample's generator (seed, key, view), so a step replays.
  The contrastive negatives are those of the local batch, as in nnssl (with one sample per rank
  the contrastive term is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import backbone_of
from openmind_ssl.methods.base import Batch, Loss, Method
from openmind_ssl.methods.common import sample_generator, scored_input

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = [
    "ROTATION_DIMS",
    "SwinUNETR",
    "SwinUNETRNetwork",
    "SwinUNETROptions",
    "cutout",
    "inpainting_l1",
    "nt_xent",
    "rotate",
    "rotation_loss",
]

#: The plane of the quarter turns: the last two spatial axes of a (..., X, Y, Z) volume, as
#: nnssl's ``rot90(x, k, (2, 3))`` of a (C, X, Y, Z) sample.
ROTATION_DIMS = (-2, -1)


@dataclass(frozen=True)
class SwinUNETROptions:
    """Settings of the SwinUNETR recipe.

    Reference values: nnssl's ``SwinUNETRTrainer`` / ``SwinUNETRLoss`` (weights 1, 1, 1;
    ``ContrastLoss`` temperature 0.5; contrastive head ``Linear(dim, 512)``, rotation head
    ``Linear(dim, 4)``) and ``swin_unetr_transform.patch_rand_drop`` (``max_drop=0.3``,
    ``max_block_sz=0.25``, ``tolr=0.05``), which follow MONAI's SwinUNETR pretraining code.

    Attributes:
        temperature: NT-Xent temperature.
        projection_dim: width of the contrastive projection.
        max_drop: a view's cut-out covers up to U(0, max_drop) of its voxels (box volumes
            summed, overlaps counted twice, as the reference does).
        max_box, min_box: a box's edge along each axis, as a fraction of the view's edge.
        view_size: None: both views are the whole crop (nnssl, MONAI); else two independent
            random sub-volumes of this size (the network is built for it).
        inpaint_weight, rotation_weight, contrast_weight: the weights of the three terms.
    """

    temperature: float = 0.5
    projection_dim: int = 512
    max_drop: float = 0.3
    max_box: float = 0.25
    min_box: float = 0.05
    view_size: tuple[int, int, int] | None = None
    inpaint_weight: float = 1.0
    rotation_weight: float = 1.0
    contrast_weight: float = 1.0

    def __post_init__(self) -> None:
        where = "method.options"
        if self.temperature <= 0:
            raise ConfigError(f"{where}.temperature must be positive")
        if self.projection_dim < 1:
            raise ConfigError(f"{where}.projection_dim must be positive")
        if not 0 <= self.max_drop < 1:
            raise ConfigError(f"{where}.max_drop must lie in [0, 1)")
        if not 0 <= self.min_box <= self.max_box <= 1:
            raise ConfigError(f"{where}: need 0 <= min_box <= max_box <= 1")
        if self.view_size is not None and min(self.view_size) < 1:
            raise ConfigError(f"{where}.view_size must be positive")


def rotate(volume: Tensor, quarter_turns: int) -> Tensor:
    """``volume`` (..., X, Y, Z) turned by ``quarter_turns`` x 90 degrees in the (Y, Z) plane:
    the voxel at (y, z) moves to (Z - 1 - z, y) per turn (``torch.rot90``'s direction)."""
    return torch.rot90(volume, quarter_turns % 4, ROTATION_DIMS)


def cutout(
    view: Tensor,
    generator: torch.Generator,
    *,
    max_drop: float,
    max_box: float,
    min_box: float,
) -> Tensor:
    """A copy of ``view`` (..., X, Y, Z) with random boxes cut out and filled with noise.

    Boxes are added until their volumes sum to U(0, max_drop) of the view; each starts anywhere
    up to ``min_box`` of an edge before the end, spans ``min_box`` to ``max_box`` of each edge
    (at least one voxel; clipped at the border) and holds Gaussian noise rescaled to [0, 1]
    (nnssl's ``patch_rand_drop`` with ``img_rep=None``); later boxes overwrite earlier ones.
    Every draw is made on the CPU ``generator``; only each box's noise moves to the view's
    device."""
    shape = tuple(view.shape[-3:])
    out = view.clone()
    target = float(torch.rand((), generator=generator)) * max_drop * math.prod(shape)
    low = [max(1, int(min_box * n)) for n in shape]
    high = [max(lo, int(max_box * n)) for lo, n in zip(low, shape, strict=True)]
    dropped = 0
    while dropped < target:
        box = []
        for n, lo, hi in zip(shape, low, high, strict=True):
            start = int(torch.randint(0, max(n - lo, 0) + 1, (), generator=generator))
            size = int(torch.randint(lo, hi + 1, (), generator=generator))
            box.append(slice(start, min(start + size, n)))
        sizes = [b.stop - b.start for b in box]
        noise = torch.randn(sizes, generator=generator)
        smallest, largest = torch.aminmax(noise)
        noise = (noise - smallest) / (largest - smallest).clamp_min(1e-12)
        out[..., box[0], box[1], box[2]] = noise.to(out.device, out.dtype)
        dropped += noise.numel()
    return out


def inpainting_l1(reconstruction: Tensor, target: Tensor, scored: Tensor) -> Tensor:
    """Per view: the mean absolute error of ``reconstruction`` against ``target`` (V, 1, *view)
    over the voxels where ``scored`` is 1 (0 for a view with none)."""
    dims = tuple(range(1, target.ndim))
    error = (reconstruction.float() - target.float()).abs() * scored
    return error.sum(dim=dims) / scored.sum(dim=dims).clamp_min(1)


def rotation_loss(logits: Tensor, quarter_turns: Tensor) -> Tensor:
    """Per view: the cross-entropy of the 4-way rotation ``logits`` (V, 4) with the true number
    of quarter turns (V,)."""
    return functional.cross_entropy(logits.float(), quarter_turns, reduction="none")


def nt_xent(projections: Tensor, temperature: float) -> Tensor:
    """Per view: NT-Xent of ``projections`` (2B, D), the first view of B samples followed by
    their second view. Cosine similarities over the temperature; view i's positive is its
    sample's other view, the denominator sums every view but itself (nnssl's
    ``ContrastLoss``). Identical projections give log(2B - 1) for every view."""
    z = functional.normalize(projections.float(), dim=1)
    logits = z @ z.T / temperature
    n = z.shape[0]
    itself = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(itself, float("-inf"))
    positives = (torch.arange(n, device=z.device) + n // 2) % n
    return functional.cross_entropy(logits, positives, reduction="none")


class SwinUNETRNetwork(nn.Module):
    """The backbone with the rotation and contrastive heads on its pooled encoder features.

    ``forward(views)`` returns (reconstruction (V, 1, *view), rotation logits (V, 4),
    projections (V, projection_dim)) in one pass, so that DDP sees every parameter used.
    """

    def __init__(self, backbone: nn.Module, projection_dim: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = backbone_of(backbone)
        width = self.adapter.feature_dim(backbone)
        self.rotation_head = nn.Linear(width, 4)
        self.contrastive_head = nn.Linear(width, projection_dim)

    def forward(self, views: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        encoded = self.adapter.encode(self.backbone, views)
        pooled = self.adapter.pool(encoded)
        reconstruction = self.adapter.decode(self.backbone, encoded)
        return reconstruction, self.rotation_head(pooled), self.contrastive_head(pooled)


class SwinUNETR(Method):
    """SwinUNETR pretraining: inpainting + rotation + contrast; see the module docstring."""

    name = "swin_unetr"
    Options = SwinUNETROptions
    options: SwinUNETROptions

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__(config)
        self.view_size = self._check_view_size()

    def _check_view_size(self) -> tuple[int, int, int]:
        view = self.options.view_size or self.patch_size
        where = "method.options.view_size"
        if any(v > p for v, p in zip(view, self.patch_size, strict=True)):
            raise ConfigError(f"{where} {view} exceeds train.patch_size {self.patch_size}")
        if view[1] != view[2]:
            raise ConfigError(
                f"the views {view} are turned in the plane of their last two axes, which must"
                " be equal (set method.options.view_size, or a crop with equal Y and Z)"
            )
        shape = view[0], view[1], view[2]
        self.backbone.check_size(self.config.model, shape, "the views")
        return shape

    def build(self) -> nn.Module:
        backbone = self.backbone.build(self.config.model, self.view_size)
        return SwinUNETRNetwork(backbone, self.options.projection_dim)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        method, options = self.config.method, self.options
        image, scored = scored_input(
            batch, anon_aware=method.anon_aware, anatomy_only=method.anatomy_only
        )
        device = image.device
        views, targets, scores, turns = [], [], [], []
        for view in (0, 1):  # all first views, then all second views
            for i, key in enumerate(batch.keys):
                generator = sample_generator(seed, key, view)
                region = (slice(i, i + 1), slice(None), *self._window(generator))
                k = int(torch.randint(4, (), generator=generator))
                target = rotate(image[region], k)
                views.append(
                    cutout(
                        target,
                        generator,
                        max_drop=options.max_drop,
                        max_box=options.max_box,
                        min_box=options.min_box,
                    )
                )
                targets.append(target)
                scores.append(rotate(scored[region], k))
                turns.append(k)
        reconstruction, logits, projections = model(torch.cat(views))
        inpaint = inpainting_l1(reconstruction, torch.cat(targets), torch.cat(scores))
        quarter_turns = torch.tensor(turns, device=device)
        rotation = rotation_loss(logits, quarter_turns)
        contrast = nt_xent(projections, options.temperature)
        per_view = (
            options.inpaint_weight * inpaint
            + options.rotation_weight * rotation
            + options.contrast_weight * contrast
        )
        samples = len(batch.keys)
        logs = {
            "inpaint": float(inpaint.detach().mean()),
            "rotation": float(rotation.detach().mean()),
            "contrast": float(contrast.detach().mean()),
            "rotation_accuracy": float((logits.argmax(dim=1) == quarter_turns).float().mean()),
        }
        total = per_view.sum() / 2  # each sample: the mean of its two views
        return Loss(total, torch.tensor(float(samples), device=device), logs)

    def _window(self, generator: torch.Generator) -> list[slice]:
        """Where a view lies in the crop: all of it, or a random sub-volume of view_size."""
        window = []
        for n, v in zip(self.patch_size, self.view_size, strict=True):
            start = int(torch.randint(0, n - v + 1, (), generator=generator)) if v < n else 0
            window.append(slice(start, start + v))
        return window
