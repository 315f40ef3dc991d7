"""SimCLR (Chen et al., ICML 2020, "A Simple Framework for Contrastive Learning of Visual
Representations") as nnssl's ``SimCLRTrainer`` / ``SimCLREvaTrainer`` run it for OpenMind.

Per sample, ``pairs_per_sample`` pairs of views are cut from the stream's crop (nnssl: crops of
192x192x64, views of 64^3): the first view of a pair anywhere, the second shifted from it by at
most ``(1 - min_overlap)`` of the view along each axis, so the two always share at least half
of every axis. Each view is augmented on its own (intensity, blur, noise, mirroring and 90
degree rotation: nnssl's crop augmentations), embedded by the backbone plus a projection MLP, and
the NT-Xent loss (temperature 0.5, cosine similarity) pulls the two views of a pair together
and pushes every other view of the *global* batch away.

- ResEnc-L: the pooled output of every encoder stage, concatenated (nnssl's
  ``VoCoArchitecture``), feeds the projector; the U-Net decoder is not used and is frozen.
- Primus-M: the backbone is built for the *view* shape (its position embedding has one entry per
  token of a view); the encoder tokens, averaged, feed the projector; ``up_projection`` is not
  used and is frozen.

Negatives from every rank: the embeddings are gathered from all DDP ranks with a gather that
passes gradients back (:func:`gather_with_grad`). Each rank sums the loss over its *local*
anchors (``Loss.total``) and reports their number (``Loss.weight``); the trainer divides by the
global number of anchors ``N`` and multiplies by the world size ``W``. Rank ``r`` thus back-
propagates ``W / N * sum_{a in r} l_a``; the gather's backward sums, over all ranks, the
gradients that reach each rank's slice of the gathered embeddings, so the gradient arriving at
rank ``r``'s own embeddings is ``W / N * d(sum_all l_a)/dz_r = W * dL/dz_r`` with ``L`` the mean
over all ``N`` anchors. Rank ``r``'s parameter gradient is ``W`` times the part of ``dL/dtheta``
that flows through the embeddings it computed; DDP's average over the ``W`` ranks adds the parts
and divides by ``W``: exactly ``dL/dtheta`` of one process holding the whole batch.

Anonymization-aware (``method.anon_aware``): voxels inside the anonymization mask are set to 0
in the views, so nothing a defacing tool left there can tell two scans apart.

Deviations from nnssl: views are cut on the training device from the crop the stream delivers
(nnssl cuts them in its data loader), with per-sample generators so that a step replays; the
augmentations are re-implemented in torch and leave out ``SimulateLowResolutionTransform``
(p = 0.1); the per-vector normalisation in the projector is written as a ``layer_norm`` without
affine parameters (what nnssl's ``InstanceNorm1d`` on ``(N, C)`` input computes); negatives come
from every rank (nnssl's NT-Xent only sees its own rank's batch: "Not tested for DDP yet!").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import backbone_of, get_backbone
from openmind_ssl.methods.base import Batch, Loss, Method
from openmind_ssl.methods.common import Stages, cut, sample_generator, scored_input

if TYPE_CHECKING:
    from openmind_ssl.train.config import ModelConfig, PretrainConfig

__all__ = [
    "ContrastiveNet",
    "ProjectionHead",
    "SimCLR",
    "SimCLROptions",
    "ViewAugmentation",
    "augment_view",
    "build_contrastive_net",
    "check_view_size",
    "draw_augmentation",
    "gather_with_grad",
    "nt_xent",
    "overlapping_offsets",
]

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class SimCLROptions:
    """SimCLR's settings; defaults are nnssl's ``SimCLRTrainer``:

    - ``view_size`` (64, 64, 64): its ``crop_size`` (the stream crop, ``train.patch_size``, is
      its ``patch_size`` 192x192x64);
    - ``pairs_per_sample`` 2: its ``num_crops_per_image``;
    - ``min_overlap`` 0.5: its ``min_crop_overlap`` (the second view moves by at most
      ``(1 - min_overlap) * view`` voxels per axis from the first);
    - ``temperature`` 0.5, cosine similarity: its ``NTXentLoss``;
    - ``hidden_dim`` / ``out_dim`` 2048 / 2048: its projector (``VocoProjectionHead``);
    - ``stages`` "all": ResEnc-L's projector reads the pooled output of every stage (nnssl);
      "deepest" reads the bottleneck only (Primus has one output either way);
    - ``augment`` True: its crop augmentations (``aug="train"``).
    """

    view_size: Shape = (64, 64, 64)
    pairs_per_sample: int = 2
    min_overlap: float = 0.5
    temperature: float = 0.5
    hidden_dim: int = 2048
    out_dim: int = 2048
    stages: Stages = "all"
    augment: bool = True

    def __post_init__(self) -> None:
        if min(self.view_size) < 1:
            raise ConfigError(f"method.options.view_size {self.view_size} must be positive")
        if self.pairs_per_sample < 1:
            raise ConfigError("method.options.pairs_per_sample must be >= 1")
        if not 0 < self.min_overlap <= 1:
            raise ConfigError("method.options.min_overlap must lie in (0, 1]")
        if self.temperature <= 0:
            raise ConfigError("method.options.temperature must be positive")
        if self.hidden_dim < 1 or self.out_dim < 1:
            raise ConfigError("method.options.hidden_dim and out_dim must be >= 1")


# -- the network --------------------------------------------------------------------------


class ProjectionHead(nn.Module):
    """nnssl's ``VocoProjectionHead``: Linear, per-vector norm, ReLU; Linear, norm, ReLU;
    Linear. The norm has no parameters and no batch statistics, so an embedding depends on its
    own view only (not on the batch, nor on how it is split across ranks)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = functional.relu(functional.layer_norm(self.fc1(x), (self.hidden_dim,)))
        x = functional.relu(functional.layer_norm(self.fc2(x), (self.hidden_dim,)))
        out: Tensor = self.fc3(x)
        return out


class ContrastiveNet(nn.Module):
    """A backbone (``backbone``, dna's parameter names) and a projector (``projector``);
    ``forward(views)`` gives the projected embeddings ``(N, out_dim)``.

    The backbone's decoder (ResEnc-L's U-Net decoder, Primus' ``up_projection``) plays no part
    and is frozen (``requires_grad=False``), so that DDP (which needs a gradient for every
    trainable parameter) and the optimizer leave it alone; it stays in the checkpoint."""

    def __init__(self, backbone: nn.Module, projector: ProjectionHead, stages: Stages) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.stages: Stages = stages
        self.adapter = backbone_of(backbone)
        encoder = self.adapter.encoder_modules(backbone)
        used = {id(p) for module in encoder for p in module.parameters()}
        for parameter in backbone.parameters():
            if id(parameter) not in used:
                parameter.requires_grad_(False)

    def embed(self, views: Tensor) -> Tensor:
        features = self.adapter.pooled_features(self.backbone, views, self.stages)
        out: Tensor = self.projector(features)
        return out

    def forward(self, views: Tensor) -> Tensor:
        return self.embed(views)


def build_contrastive_net(
    model: ModelConfig, view_size: Shape, hidden_dim: int, out_dim: int, stages: Stages
) -> ContrastiveNet:
    """A :class:`ContrastiveNet` for views of ``view_size`` (``model``: a ``ModelConfig``)."""
    adapter = get_backbone(model.architecture)
    backbone = adapter.build(model, view_size)
    projector = ProjectionHead(adapter.feature_dim(backbone, stages), hidden_dim, out_dim)
    return ContrastiveNet(backbone, projector, stages)


def check_view_size(model: ModelConfig, view_size: Shape, crop: Shape, what: str) -> None:
    """Refuse views the backbone cannot take: larger than the crop, or not of a size whose
    pooled features it can compute (``Backbone.check_pooled_size``: whole Primus tokens; for
    ResEnc, its total stride and more than one voxel at the bottleneck)."""
    if any(v > c for v, c in zip(view_size, crop, strict=True)):
        raise ConfigError(f"{what} {view_size} does not fit in train.patch_size {crop}")
    get_backbone(model.architecture).check_pooled_size(model, view_size, what)


# -- views and their augmentation -----------------------------------------------------------


def overlapping_offsets(
    generator: torch.Generator, crop: Shape, view: Shape, min_overlap: float
) -> tuple[Shape, Shape]:
    """Corners of two views of ``view`` voxels in a crop of ``crop``: the first uniform, the
    second shifted by at most ``floor((1 - min_overlap) * view)`` voxels per axis (within the
    crop), as nnssl's ``SimCLRTransform`` does."""
    first, second = [], []
    for c, v in zip(crop, view, strict=True):
        a = int(torch.randint(0, c - v + 1, (), generator=generator))
        shift = math.floor((1 - min_overlap) * v + 1e-9)
        lo, hi = max(0, a - shift), min(c - v, a + shift)
        first.append(a)
        second.append(int(torch.randint(lo, hi + 1, (), generator=generator)))
    return (first[0], first[1], first[2]), (second[0], second[1], second[2])


@dataclass(frozen=True)
class ViewAugmentation:
    """The parameters of one view's augmentation (None: that transform is off); nnssl's crop
    augmentations with batchgenerators' defaults, in its order."""

    noise_std: float | None = None
    noise_seed: int = 0
    blur_sigma: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    gamma_inverted: float | None = None
    gamma: float | None = None
    flips: tuple[bool, bool, bool] = (False, False, False)
    rot90: int = 0  # quarter turns in the (x, y) plane


def _factor(u: float, v: float, lo: float, hi: float) -> float:
    """batchgenerators' draw of a factor around 1: below 1 half of the time, above otherwise."""
    return lo + (1 - lo) * v if u < 0.5 and lo < 1 else max(lo, 1) + (hi - max(lo, 1)) * v


def draw_augmentation(generator: torch.Generator, view: Shape) -> ViewAugmentation:
    """One view's augmentation (nnssl's probabilities): Gaussian noise (p 0.1, sigma up to 0.1),
    blur (p 0.2 x 0.5, sigma 0.5-1), brightness (p 0.15, x0.75-1.25), contrast (p 0.15,
    0.75-1.25), inverted gamma (p 0.1) and gamma (p 0.3), 0.7-1.5 keeping mean and std; a mirror
    per axis (p 0.5 each); 1-3 quarter turns in the (x, y) plane (p 0.3, square planes only)."""
    u = torch.rand(20, generator=generator).tolist()
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    square = view[0] == view[1]
    return ViewAugmentation(
        noise_std=0.1 * u[1] if u[0] < 0.1 else None,
        noise_seed=seed,
        blur_sigma=0.5 + 0.5 * u[4] if u[2] < 0.2 and u[3] < 0.5 else None,
        brightness=0.75 + 0.5 * u[6] if u[5] < 0.15 else None,
        contrast=_factor(u[8], u[9], 0.75, 1.25) if u[7] < 0.15 else None,
        gamma_inverted=_factor(u[11], u[12], 0.7, 1.5) if u[10] < 0.1 else None,
        gamma=_factor(u[14], u[15], 0.7, 1.5) if u[13] < 0.3 else None,
        flips=(u[16] < 0.5, u[17] < 0.5, u[18] < 0.5),
        rot90=1 + min(int(u[19] / 0.1), 2) if square and u[19] < 0.3 else 0,
    )


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (C, X, Y, Z), truncated at 4 sigma, edges replicated."""
    radius = int(4 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = x.unsqueeze(1)  # channels as the batch: (C, 1, X, Y, Z)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = functional.conv3d(functional.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out.squeeze(1)


def _gamma(x: Tensor, gamma: float, inverted: bool) -> Tensor:
    """batchgenerators' ``augment_gamma`` with ``retain_stats``."""
    if inverted:
        x = -x
    mean, std = x.mean(), x.std()
    low = x.min()
    span = x.max() - low + 1e-7
    x = ((x - low) / span).pow(gamma) * span + low
    x = (x - x.mean()) / (x.std() + 1e-8) * std + mean
    return -x if inverted else x


def augment_view(view: Tensor, aug: ViewAugmentation) -> Tensor:
    """``view`` (C, X, Y, Z) transformed as ``aug`` says (float32, on its device)."""
    x = view
    if aug.noise_std is not None:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(aug.noise_seed))
        x = x + aug.noise_std * noise.to(x.device, x.dtype)
    if aug.blur_sigma is not None:
        x = _blur(x, aug.blur_sigma)
    if aug.brightness is not None:
        x = x * aug.brightness
    if aug.contrast is not None:
        low, high, mean = x.min(), x.max(), x.mean()
        x = ((x - mean) * aug.contrast + mean).clamp(low, high)
    if aug.gamma_inverted is not None:
        x = _gamma(x, aug.gamma_inverted, inverted=True)
    if aug.gamma is not None:
        x = _gamma(x, aug.gamma, inverted=False)
    axes = [axis + 1 for axis, flip in enumerate(aug.flips) if flip]
    if axes:
        x = x.flip(axes)
    if aug.rot90:
        x = x.rot90(aug.rot90, dims=(1, 2))
    return x


# -- the loss -------------------------------------------------------------------------------


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each rank the sum, over all ranks, of the gradients
    that reached its slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        rank = dist.get_rank()
        return total[rank * ctx.rows : (rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """``x`` of every rank concatenated in rank order, with gradients flowing back to each
    rank's own ``x``, and the row where this rank's part starts. One process: ``(x, 0)``.

    (A hand-written autograd function rather than ``torch.distributed.nn.functional.all_gather``,
    which is deprecated in torch 2.13 and warns at every call; the gradients are the same.)"""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    gather: Callable[[Tensor], Tensor] = _GatherWithGrad.apply  # (Function.apply is untyped)
    gathered = gather(x)
    return gathered, dist.get_rank() * x.shape[0]


def nt_xent(first: Tensor, second: Tensor, temperature: float) -> tuple[Tensor, float]:
    """NT-Xent summed over this rank's anchors, and the fraction of them whose partner is the
    most similar view. ``first[i]`` and ``second[i]`` (P, D) embed the two views of pair ``i``.

    Every view is an anchor; its candidates are the ``2 P W - 1`` other views of all ``W``
    ranks (the views of every rank take part with their gradients), its positive the other view
    of its pair: ``-log(exp(s_pos / t) / sum_candidates exp(s / t))`` with ``s`` the cosine
    similarity. Divided by the number of anchors of all ranks, this is SimCLR's loss."""
    with torch.autocast(first.device.type, enabled=False):  # similarities in float32
        first = functional.normalize(first.float(), dim=1)
        second = functional.normalize(second.float(), dim=1)
        all_first, start = gather_with_grad(first)
        all_second, _ = gather_with_grad(second)
        pairs, total_pairs = first.shape[0], all_first.shape[0]
        candidates = torch.cat([all_first, all_second])
        anchors = torch.cat([first, second])
        own = torch.arange(start, start + pairs, device=first.device)
        index = torch.cat([own, own + total_pairs])  # each anchor's place among the candidates
        partner = torch.cat([own + total_pairs, own])
        logits = anchors @ candidates.T / temperature
        itself = functional.one_hot(index, candidates.shape[0]).bool()  # not its own candidate
        logits = logits.masked_fill(itself, float("-inf"))
        total = functional.cross_entropy(logits, partner, reduction="sum")
        accuracy = float((logits.detach().argmax(dim=1) == partner).float().mean())
    return total, accuracy


class SimCLR(Method):
    name = "simclr"
    Options: ClassVar[type[Any]] = SimCLROptions

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__(config)
        check_view_size(
            config.model, self.options.view_size, self.patch_size, "method.options.view_size"
        )

    @property
    def network_input_size(self) -> Shape:
        """The spatial shape the backbone sees (and its position embedding is sized for)."""
        view: Shape = self.options.view_size
        return view

    def build(self) -> nn.Module:
        o = self.options
        return build_contrastive_net(
            self.config.model, o.view_size, o.hidden_dim, o.out_dim, o.stages
        )

    def views(self, batch: Batch, seed: int) -> tuple[Tensor, Tensor]:
        """The first and the second views of every pair, (P, 1, *view_size) each, samples in
        batch order and pairs within a sample in draw order."""
        o = self.options
        image, _ = scored_input(batch, anon_aware=self.config.method.anon_aware)
        first, second = [], []
        with torch.autocast(image.device.type, enabled=False):
            for sample, key in zip(image.float(), batch.keys, strict=True):
                generator = sample_generator(seed, key)
                for _ in range(o.pairs_per_sample):
                    a, b = overlapping_offsets(
                        generator, self.patch_size, o.view_size, o.min_overlap
                    )
                    views = [cut(sample, a, o.view_size), cut(sample, b, o.view_size)]
                    if o.augment:
                        views = [
                            augment_view(v, draw_augmentation(generator, o.view_size))
                            for v in views
                        ]
                    first.append(views[0])
                    second.append(views[1])
        return torch.stack(first), torch.stack(second)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        first, second = self.views(batch, seed)
        pairs = first.shape[0]
        embeddings = model(torch.cat([first, second]))
        total, accuracy = nt_xent(embeddings[:pairs], embeddings[pairs:], self.options.temperature)
        weight = torch.tensor(float(2 * pairs), device=total.device)
        return Loss(total, weight, {"accuracy": accuracy})
