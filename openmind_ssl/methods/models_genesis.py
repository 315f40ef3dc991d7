"""Models Genesis (Zhou et al., MICCAI 2019; Medical Image Analysis 2021): restore a distorted crop.

Each crop is flipped (input and target alike), then its input is distorted by a random
composition of local pixel shuffling (the voxels inside many small random blocks permuted),
a non-linear intensity transformation (a cubic Bezier curve, increasing or decreasing), and
in-painting (a few random boxes replaced by uniform noise) or out-painting (everything but a
few boxes replaced by noise). The network restores the undistorted crop; the loss is the mean
squared error over every voxel, as nnssl's ``ModelGenesisTrainer``.

- ResEnc-L: the U-Net with one output channel maps the distorted crop to the original.
- Primus-M: the plain transformer (every token visible, no MAE decoder), one output channel,
  as nnssl's ``ModelGenesisEvaTrainer`` (an EvaMAE with mask ratio 0 and no decoder blocks).

Anonymization-aware (``method.anon_aware``, nnssl's ``ModelGenesisTrainer_ANON``): voxels inside
the anonymization mask are set to 0 before any distortion and never scored; the loss is divided
by the voxels that are. ``method.anatomy_only`` also restricts the score to the anatomy mask.

Every transform is a pair: ``sample_*`` draws its parameters from the sample's generator (one
per sample and step, see ``common.sample_generator``), and a pure function applies them on the
device, vectorised over the voxels (Python loops run over a few boxes at most).

Deviations from nnssl, and why:

- Intensities. The original code expects crops scaled to [0, 1] (clipped CT); nnssl runs it on
  z-scored MRI unchanged, so the Bezier map (``np.interp`` on [0, 1]) flattens every voxel
  outside [0, 1] to the curve's end values, and the painting noise, drawn in [0, 1), sits in
  an arbitrary band of the z-scored range. Here each crop is min-max scaled to [0, 1], distorted
  there as the paper does, and scaled back to its own range; the target stays the z-scored crop.
- Local pixel shuffling. nnssl shuffles 10,000 blocks one after another in Python (seconds per
  160^3 crop); here the same blocks (edges 1 to a tenth of the crop, each block permuted from
  the undistorted crop, later blocks overwriting earlier ones) are done in one batched
  sort/scatter on the device.
- Painting noise. nnssl draws fresh noise per box; here one noise volume per crop fills every
  box (the same distribution: independent uniform values per voxel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from openmind_data.errors import ConfigError
from openmind_ssl.methods.base import Batch, Loss, Method
from openmind_ssl.methods.common import sample_generator, scored_input

__all__ = [
    "Bezier",
    "Box",
    "Distortion",
    "GenesisOptions",
    "LocalShuffle",
    "ModelsGenesis",
    "Painting",
    "bezier_map",
    "box_mask",
    "distort",
    "flip",
    "local_shuffle",
    "paint",
    "sample_bezier",
    "sample_distortion",
    "sample_local_shuffle",
    "sample_painting",
]

Shape = tuple[int, int, int]

#: Points at which the Bezier curve is tabulated before interpolation (nnssl: 100,000).
BEZIER_SAMPLES = 100_000


@dataclass(frozen=True)
class GenesisOptions:
    """The distortion probabilities of nnssl's ``ModelGenesisConfig`` (those of the Models
    Genesis code): flip 0.4 (up to three flips, each while a draw stays below it), local pixel
    shuffling 0.5 over 10,000 blocks, non-linear transformation 0.9, painting 0.9 of which
    out-painting 0.8 and in-painting 0.2."""

    flip_rate: float = 0.4
    local_rate: float = 0.5
    nonlinear_rate: float = 0.9
    paint_rate: float = 0.9
    outpaint_rate: float = 0.8  # of the painted crops; the others are in-painted
    shuffle_blocks: int = 10_000

    def __post_init__(self) -> None:
        for name in ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "outpaint_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"method.options.{name} must lie in [0, 1]")
        if self.shuffle_blocks < 0:
            raise ConfigError("method.options.shuffle_blocks must be >= 0")


# -- parameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of voxels: ``origin`` (its first voxel) and ``size`` per axis."""

    origin: Shape
    size: Shape

    def slices(self) -> tuple[slice, slice, slice]:
        x, y, z = (slice(o, o + s) for o, s in zip(self.origin, self.size, strict=True))
        return x, y, z


@dataclass(frozen=True)
class LocalShuffle:
    """Blocks whose voxels are permuted: ``origins`` and ``sizes`` (K, 3) int64, and ``keys``
    (sum of the block volumes,) floats in [0, 1), one per voxel of each block in C order, block
    after block: a block's voxels take the values of its voxels sorted by key."""

    origins: Tensor
    sizes: Tensor
    keys: Tensor


@dataclass(frozen=True)
class Bezier:
    """A cubic Bezier curve from (0, 0) to (1, 1) through the control points ``p1`` and ``p2``
    (x, y); ``decreasing`` pairs the curve's abscissae with its ordinates in reverse (x(t) maps
    to y(1 - t)), which inverts the contrast."""

    p1: tuple[float, float]
    p2: tuple[float, float]
    decreasing: bool


@dataclass(frozen=True)
class Painting:
    """Boxes and a noise volume (uniform in [0, 1)): in-painting puts the noise inside the
    boxes; out-painting (``outer``) everywhere else."""

    boxes: tuple[Box, ...]
    outer: bool
    noise: Tensor


@dataclass(frozen=True)
class Distortion:
    """One crop's draw: the axes flipped (input and target alike, in order) and the
    distortions of the input, None where not drawn."""

    flips: tuple[int, ...]
    shuffle: LocalShuffle | None
    curve: Bezier | None
    painting: Painting | None


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand(1, generator=generator, dtype=torch.float64).item())


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both included (``high`` raised to ``low`` if below)."""
    return int(torch.randint(low, max(low, high) + 1, (1,), generator=generator).item())


def _box(size: Shape, shape: Shape, generator: torch.Generator) -> Box:
    """A box of ``size`` at least 3 voxels from the crop's faces where it fits (as the Models
    Genesis code places its painting boxes)."""
    origin = []
    for n, s in zip(shape, size, strict=True):
        low = min(3, n - s)
        origin.append(_randint(low, n - s - 3, generator))
    return Box((origin[0], origin[1], origin[2]), size)


def sample_local_shuffle(shape: Shape, blocks: int, generator: torch.Generator) -> LocalShuffle:
    """``blocks`` blocks with edges from 1 to a tenth of the crop's, anywhere inside it."""
    high = torch.tensor([max(1, n // 10) for n in shape])
    sizes = 1 + (torch.rand(blocks, 3, generator=generator, dtype=torch.float64) * high).long()
    room = torch.tensor(shape) - sizes + 1
    origins = (torch.rand(blocks, 3, generator=generator, dtype=torch.float64) * room).long()
    keys = torch.rand(int(sizes.prod(dim=1).sum()), generator=generator)
    return LocalShuffle(origins, sizes, keys)


def sample_bezier(generator: torch.Generator) -> Bezier:
    """Two control points uniform in the unit square; decreasing half of the time."""
    p1 = (_uniform(generator), _uniform(generator))
    p2 = (_uniform(generator), _uniform(generator))
    return Bezier(p1, p2, decreasing=_uniform(generator) < 0.5)


def sample_painting(shape: Shape, outer: bool, generator: torch.Generator) -> Painting:
    """In-painting: up to 5 boxes of a sixth to a third of each edge (one more while a draw
    stays below 0.95). Out-painting: a kept box of 3/7 to 4/7 of each edge, then up to 4 more
    likewise."""
    boxes: list[Box] = []
    if outer:
        while len(boxes) < 5 and (not boxes or _uniform(generator) < 0.95):
            size = [n - _randint(3 * n // 7, 4 * n // 7, generator) for n in shape]
            boxes.append(_box((size[0], size[1], size[2]), shape, generator))
    else:
        while len(boxes) < 5 and _uniform(generator) < 0.95:
            size = [_randint(max(1, n // 6), max(1, n // 3), generator) for n in shape]
            boxes.append(_box((size[0], size[1], size[2]), shape, generator))
    return Painting(tuple(boxes), outer, torch.rand(shape, generator=generator))


def sample_distortion(
    shape: Shape, options: GenesisOptions, generator: torch.Generator
) -> Distortion:
    """One crop's flips and distortions, in the Models Genesis order and probabilities."""
    flips: list[int] = []
    while len(flips) < 3 and _uniform(generator) < options.flip_rate:
        flips.append(_randint(0, 2, generator))
    shuffle = None
    if _uniform(generator) < options.local_rate:
        shuffle = sample_local_shuffle(shape, options.shuffle_blocks, generator)
    curve = sample_bezier(generator) if _uniform(generator) < options.nonlinear_rate else None
    painting = None
    if _uniform(generator) < options.paint_rate:
        outer = _uniform(generator) < options.outpaint_rate
        painting = sample_painting(shape, outer, generator)
    return Distortion(tuple(flips), shuffle, curve, painting)


# -- transforms -----------------------------------------------------------------------------


def flip(volume: Tensor, axes: tuple[int, ...]) -> Tensor:
    """``volume`` (..., X, Y, Z) flipped along each spatial axis in ``axes`` (0, 1 or 2), in
    order; an axis flipped twice is back."""
    odd = tuple(sorted({a for a in axes if axes.count(a) % 2}))
    return volume.flip([volume.ndim - 3 + a for a in odd]) if odd else volume


def local_shuffle(volume: Tensor, shuffle: LocalShuffle) -> Tensor:
    """``volume`` (X, Y, Z) with the voxels of each block permuted, each block drawing from
    the unshuffled volume and later blocks overwriting earlier ones where they overlap."""
    if shuffle.sizes.shape[0] == 0:
        return volume
    device = volume.device
    _, y, z = volume.shape
    sizes, origins = shuffle.sizes.to(device), shuffle.origins.to(device)
    volumes = sizes.prod(dim=1)
    blocks = torch.arange(len(sizes), device=device)
    block = blocks.repeat_interleave(volumes, output_size=len(shuffle.keys))  # of each entry
    local = torch.arange(len(block), device=device) - (volumes.cumsum(0) - volumes)[block]
    size, origin = sizes[block], origins[block]
    i = origin[:, 0] + local // (size[:, 1] * size[:, 2])
    j = origin[:, 1] + (local // size[:, 2]) % size[:, 1]
    k = origin[:, 2] + local % size[:, 2]
    flat = (i * y + j) * z + k
    # Sorted by (block, key), each block's entries stay in its own range, in random order.
    order = torch.argsort(block.double() + shuffle.keys.to(device).double(), stable=True)
    source = flat[order]
    owner = torch.full((volume.numel(),), -1, dtype=torch.long, device=device)
    owner = owner.scatter_reduce(0, flat, block, reduce="amax")
    last = owner[flat] == block  # the entries of the block that writes each voxel last
    values = volume.reshape(-1)
    out = values.clone()
    out[flat[last]] = values[source[last]]
    return out.view_as(volume)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """``np.interp``: piecewise linear through (xp, fp), xp ascending, constant outside."""
    right = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[right - 1], xp[right], fp[right - 1], fp[right]
    span = x1 - x0
    frac = torch.where(span > 0, (x - x0) / torch.where(span > 0, span, 1.0), 0.0)
    return f0 + frac.clamp(0.0, 1.0) * (f1 - f0)


def bezier_map(volume: Tensor, curve: Bezier, samples: int = BEZIER_SAMPLES) -> Tensor:
    """Intensities in [0, 1] mapped through ``curve`` (tabulated at ``samples`` points)."""
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64, device=volume.device)
    basis = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    xs = torch.tensor([0.0, curve.p1[0], curve.p2[0], 1.0], dtype=torch.float64)
    ys = torch.tensor([0.0, curve.p1[1], curve.p2[1], 1.0], dtype=torch.float64)
    x_curve = xs.to(volume.device) @ basis
    y_curve = ys.to(volume.device) @ basis
    y_table = y_curve.flip(0) if curve.decreasing else y_curve.sort().values
    mapped = _interp(volume.double().reshape(-1), x_curve.sort().values, y_table)
    return mapped.view_as(volume).to(volume.dtype)


def box_mask(shape: Shape, boxes: tuple[Box, ...], device: torch.device | None = None) -> Tensor:
    """Boolean (X, Y, Z): True inside any of ``boxes``."""
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    for box in boxes:
        mask[box.slices()] = True
    return mask


def paint(volume: Tensor, painting: Painting) -> Tensor:
    """In-painting: the noise inside the boxes; out-painting: the noise outside them."""
    shape = cast(Shape, tuple(volume.shape))
    inside = box_mask(shape, painting.boxes, volume.device)
    noise = painting.noise.to(device=volume.device, dtype=volume.dtype)
    if painting.outer:
        return torch.where(inside, volume, noise)
    return torch.where(inside, noise, volume)


def distort(volume: Tensor, distortion: Distortion) -> Tensor:
    """The network's input from a flipped crop (X, Y, Z) scaled to [0, 1]: local shuffling,
    then the Bezier map, then painting, those drawn."""
    if distortion.shuffle is not None:
        volume = local_shuffle(volume, distortion.shuffle)
    if distortion.curve is not None:
        volume = bezier_map(volume, distortion.curve)
    if distortion.painting is not None:
        volume = paint(volume, distortion.painting)
    return volume


# -- the method -----------------------------------------------------------------------------


class ModelsGenesis(Method):
    name = "models_genesis"
    Options = GenesisOptions

    def build(self) -> nn.Module:
        return self.backbone.build(self.config.model, self.patch_size)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        method, options = self.config.method, cast(GenesisOptions, self.options)
        image, scored = scored_input(
            batch, anon_aware=method.anon_aware, anatomy_only=method.anatomy_only
        )
        shape = cast(Shape, tuple(image.shape[2:]))
        inputs, targets, weights = [], [], []
        for index, key in enumerate(batch.keys):
            distortion = sample_distortion(shape, options, sample_generator(seed, key))
            target = flip(image[index, 0].float(), distortion.flips)
            low, high = target.min(), target.max()
            span = (high - low).clamp_min(1e-6)
            inputs.append(distort((target - low) / span, distortion) * span + low)
            targets.append(target)
            weights.append(flip(scored[index, 0], distortion.flips))
        x, target, weight = (torch.stack(v).unsqueeze(1) for v in (inputs, targets, weights))
        output = model(x.to(image.dtype))
        total = ((output.float() - target) ** 2 * weight).sum()
        return Loss(total, weight.sum().detach())
