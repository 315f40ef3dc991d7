"""Masked image modelling with the mask inside the network: SimMIM on Primus-M, S3D on ResEnc-L.

- Primus-M, SimMIM (Xie et al., CVPR 2022): the crop is cut into 8^3 tokens; after the patch
  embedding, ``method.mask_ratio`` (75%) of them are replaced by one learned mask token
  (``mask_token``, a parameter of the wrapper, as nnssl's ``EvaSimMIM``) and the FULL sequence
  goes through the transformer (unlike MAE, whose encoder sees only the visible tokens); the
  patch decoder maps every token back to voxels.
- ResEnc-L, S3D (SparK, Tian et al., ICLR 2023; nnssl's ``SparkMAETrainer``): sparse masked
  convolution emulated on the dense CNN. ``method.mask_ratio`` of the crop's ``block_size``^3
  cubes (16^3) are hidden; the input is zeroed there, and inside the encoder every convolution,
  average pooling and instance norm works on the visible positions only: the output of each is
  zeroed at the hidden positions of its resolution, and each norm takes its statistics over the
  visible positions. Hidden regions therefore never leak into visible features, nor does the
  empty space skew the norms. Before the U-Net decoder, SparK "densifies" each stage's features:
  a (non-affine) norm over the visible positions, one learned mask embedding per stage in the
  hidden positions, and a 3x3x3 convolution (``densify="spark"``, nnssl's ``SparK3D``); or just
  the embedding (``densify="token"``, nnssl's ``EfficientSpark3D``).

Both score the squared error (nnssl's ``MAEMSELoss`` / ``SparkLoss``; ``loss="l1"``: the SimMIM
paper's L1) on the hidden voxels. ``mask_ratio_range`` draws each sample's ratio uniformly from
a range instead (nnssl's ``BaseVariableSparkMAETrainer``: 0.6 to 0.9).

Anonymization-aware (``method.anon_aware``): voxels inside the anonymization mask are set to 0
in the input and never scored (``common.scored_input``), so the loss does not depend on what a
defacing tool left there. ``anatomy_only`` also restricts the score to the anatomy mask.

Deviations from nnssl, and why:

* A stage coarser than the mask cubes (ResEnc-L's 5^3 bottleneck at 160^3, stride 32 over 16^3
  cubes) counts a voxel as visible when any cube under it is; nnssl treats such a whole stage
  as visible, which lets the bottleneck compute features over fully hidden regions.
* The variable ratio is drawn per sample from the sample's generator (replayable, independent of
  the batch split); nnssl draws one per batch from a global ``RandomState`` because its sparse
  norm gathers the same number of visible voxels from every sample. Here the norms use masked
  sums, which give the same values and allow any count per sample.
* nnssl's sparse modules patch ``forward`` through a module-global mask; here the wrapper runs
  the backbone's own modules stage by stage with the mask passed along, so the backbone keeps
  dna's parameter names (``backbone.*``) and no global state is involved.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.methods.base import Batch, Loss
from openmind_ssl.methods.common import (
    MaskedImageMethod,
    MaskingOptions,
    cells_to_voxels,
    sample_generator,
    scored_input,
)
from openmind_ssl.models.eva import trunc_normal_
from openmind_ssl.models.primus import Primus
from openmind_ssl.models.resenc import BasicBlockD, ConvNormAct, ResEncL, ResidualStack

__all__ = [
    "MaskedTokenPrimus",
    "SimMIM",
    "SimMIMOptions",
    "SparseMaskedUNet",
    "hidden_cells",
    "masked_instance_norm",
]

NORM_EPS = 1e-5  # nnssl's SparseInstanceNorm3d (InstanceNorm1d's default)


@dataclass(frozen=True)
class SimMIMOptions(MaskingOptions):
    """Settings of SimMIM / S3D: ``mask_ratio`` and ``block_size`` (``MaskingOptions``), and:

    Reference values (nnssl): squared error on the hidden voxels (``MAEMSELoss`` for SimMIM on
    Primus, ``SparkLoss`` for S3D); a fixed ratio of 0.75 (``BaseMAETrainer.mask_percentage``),
    or 0.6 to 0.9 in ``BaseVariableSparkMAETrainer``; 16^3 cubes on ResEnc-L
    (``BaseMAETrainer.mask_creation``) and 8^3 tokens on Primus-M; SparK densification with a
    norm, a mask token and a 3x3x3 projection per stage (``SparK3D(use_mask_token=True)``).

    Attributes:
        loss: "mse" (nnssl) or "l1" (the SimMIM paper's choice).
        mask_ratio_range: None: every sample hides ``mask_ratio``; (low, high): each
            sample hides a ratio drawn uniformly from [low, high].
        densify: ResEnc-L only. "spark": norm + mask token + projection (nnssl's ``SparK3D``);
            "token": the mask token alone (nnssl's ``EfficientSpark3D``).
    """

    loss: Literal["mse", "l1"] = "mse"
    mask_ratio_range: tuple[float, float] | None = None
    densify: Literal["spark", "token"] = "spark"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_ratio_range is not None:
            low, high = self.mask_ratio_range
            if not 0 < low <= high < 1:
                raise ConfigError(
                    f"method.options.mask_ratio_range {self.mask_ratio_range}: need"
                    " 0 < low <= high < 1"
                )


def hidden_cells(
    cells: int, ratio: float | tuple[float, float], generators: list[torch.Generator]
) -> Tensor:
    """(B, cells) booleans, True on each sample's hidden cells: ``int(r * cells)`` of them, with
    ``r = ratio`` or, for a (low, high) range, drawn uniformly per sample from it."""
    rows = []
    for generator in generators:
        if isinstance(ratio, tuple):
            low, high = ratio
            r = low + (high - low) * float(torch.rand((), generator=generator))
        else:
            r = ratio
        order = torch.randperm(cells, generator=generator)
        row = torch.zeros(cells, dtype=torch.bool)
        row[order[: int(r * cells)]] = True
        rows.append(row)
    return torch.stack(rows)


def masked_instance_norm(
    x: Tensor,
    active: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = NORM_EPS,
) -> Tensor:
    """Instance norm of ``x`` (B, C, *spatial) with the mean and (biased) variance taken over
    the positions where ``active`` (B, 1, *spatial, 0/1) is 1, then the affine ``weight`` and
    ``bias``; 0 where ``active`` is 0. In float32 (as autocast runs instance norm)."""
    dims = tuple(range(2, x.ndim))
    x = x.float() * active
    count = active.sum(dim=dims, keepdim=True).clamp_min(1)
    mean = x.sum(dim=dims, keepdim=True) / count
    centred = (x - mean) * active
    variance = centred.square().sum(dim=dims, keepdim=True) / count
    scale = torch.rsqrt(variance + eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        scale = scale * weight.float().view(shape)
    out = centred * scale
    if bias is not None:
        out = out + bias.float().view(shape) * active
    return out


def _sparse_unit(unit: ConvNormAct, x: Tensor, active: Tensor) -> Tensor:
    """A conv-norm-act unit on the active positions: the conv, its output zeroed where hidden,
    the norm over the active positions, the nonlinearity (which keeps zeros zero)."""
    out = masked_instance_norm(
        unit.conv(x), active, unit.norm.weight, unit.norm.bias, unit.norm.eps
    )
    if unit.nonlin is not None:
        out = unit.nonlin(out)
    return out


def _sparse_block(block: BasicBlockD, x: Tensor, active: Tensor) -> Tensor:
    """A ResNet-D block with every conv, pooling and norm restricted to the active positions
    (``active`` at the block's output resolution)."""
    residual = x
    if isinstance(block.skip, nn.Sequential):
        for module in block.skip:
            if isinstance(module, ConvNormAct):
                residual = _sparse_unit(module, residual, active)
            else:  # the ResNet-D average pooling
                residual = module(residual) * active
    out = _sparse_unit(block.conv2, _sparse_unit(block.conv1, x, active), active)
    activated: Tensor = block.nonlin2(out + residual)
    return activated


class SparseMaskedUNet(nn.Module):
    """S3D: ResEnc-L (``backbone``) with a sparse masked encoder and SparK densification.

    ``forward(image, visible)``: ``visible`` (B, 1, *image) is 1 on the visible voxels, 0 on the
    hidden ones; the output is the backbone's full-resolution reconstruction. Parameters beyond
    the backbone: ``mask_tokens.{s}`` (1, C_s, 1, 1, 1) per stage and, with ``densify="spark"``,
    ``densify_projs.{s}`` (identity at full resolution, a 3x3x3 conv at every other stage, as
    nnssl lays them out).
    """

    def __init__(self, backbone: ResEncL, densify: Literal["spark", "token"] = "spark") -> None:
        super().__init__()
        self.backbone = backbone
        self.densify = densify
        channels = backbone.encoder.output_channels
        self.mask_tokens = nn.ParameterList()
        for width in channels:
            token = nn.Parameter(torch.zeros(1, width, 1, 1, 1))
            trunc_normal_(token, std=0.02, bound=0.02)  # timm's (std .02, a=-.02, b=.02)
            self.mask_tokens.append(token)
        self.densify_projs = nn.ModuleList()
        if densify == "spark":
            self.densify_projs.extend(
                nn.Identity() if s == 0 else nn.Conv3d(width, width, 3, padding=1)
                for s, width in enumerate(channels)
            )

    def forward(self, image: Tensor, visible: Tensor) -> Tensor:
        skips, actives = self.encode(image, visible)
        dense = [
            self._densify(s, features, active)
            for s, (features, active) in enumerate(zip(skips, actives, strict=True))
        ]
        out = self.backbone.decoder(dense)
        if not isinstance(out, Tensor):
            raise TypeError("S3D needs the decoder without deep supervision")
        return out

    def encode(self, image: Tensor, visible: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The sparse encoder: every stage's features (0 at its hidden positions) and its
        0/1 map of visible positions, full resolution first. A position of a coarser stage is
        visible when any voxel under it is."""
        encoder = self.backbone.encoder
        x = image * visible
        for unit in encoder.stem.convs:
            x = _sparse_unit(typing.cast(ConvNormAct, unit), x, visible)
        factor = 1
        active = visible
        skips: list[Tensor] = []
        actives: list[Tensor] = []
        for stage in encoder.stages:
            for module in typing.cast(ResidualStack, stage).blocks:
                block = typing.cast(BasicBlockD, module)
                stride = block.conv1.conv.stride[0]
                if stride > 1:
                    factor *= stride
                    active = functional.max_pool3d(visible, factor, factor)
                x = _sparse_block(block, x, active)
            skips.append(x)
            actives.append(active)
        return skips, actives

    def _densify(self, stage: int, features: Tensor, active: Tensor) -> Tensor:
        """The hidden positions of a stage's features filled with its mask token."""
        if self.densify == "spark":
            features = masked_instance_norm(features, active)
        token = self.mask_tokens[stage].to(features.dtype)
        filled = torch.where(active > 0, features, token)
        if self.densify == "spark":
            projected: Tensor = self.densify_projs[stage](filled)
            return projected
        return filled


class MaskedTokenPrimus(nn.Module):
    """SimMIM on Primus (``backbone``): hidden tokens become the learned ``mask_token`` after the
    patch embedding; the whole sequence goes through the transformer and the patch decoder.

    ``forward(image, hidden)``: ``hidden`` (B, N) booleans over the tokens (C order over the
    token grid). The backbone's own ``mask_token`` (a zero buffer in dna's Primus) is unused.
    """

    def __init__(self, backbone: Primus) -> None:
        super().__init__()
        self.backbone = backbone
        self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        nn.init.normal_(self.mask_token, std=1e-6)  # nnssl's EvaSimMIM

    def forward(self, image: Tensor, hidden: Tensor) -> Tensor:
        backbone = self.backbone
        tokens = backbone.embed(image)
        if hidden.shape != tokens.shape[:2]:
            raise ValueError(
                f"hidden must be (B, {tokens.shape[1]}) booleans, got {tuple(hidden.shape)}"
            )
        tokens = torch.where(hidden.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        encoded = backbone.eva(tokens)
        b, _, c = encoded.shape
        volume = encoded.transpose(1, 2).reshape(b, c, *backbone.token_grid())
        logits: Tensor = backbone.up_projection(volume)
        return logits


class SimMIM(MaskedImageMethod):
    """SimMIM on Primus-M, S3D (sparse masked modelling) on ResEnc-L; see the module docstring."""

    name = "simmim"
    Options = SimMIMOptions
    options: SimMIMOptions

    def build(self) -> nn.Module:
        """The backbone in its recipe's wrapper: the learned mask token on the transformer,
        the sparse masked encoder on the CNN."""
        recipes: dict[type[nn.Module], Callable[[Any], nn.Module]] = {
            Primus: MaskedTokenPrimus,
            ResEncL: lambda backbone: SparseMaskedUNet(backbone, self.options.densify),
        }
        recipe = recipes.get(self.backbone.network_class)
        if recipe is None:
            raise TypeError(f"simmim has no recipe for {self.backbone.label}")
        return recipe(self.backbone.build(self.config.model, self.patch_size))

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        method = self.config.method
        image, scored = scored_input(
            batch, anon_aware=method.anon_aware, anatomy_only=method.anatomy_only
        )
        x, y, z = self.grid
        ratio = self.options.mask_ratio_range or self.options.mask_ratio
        generators = [sample_generator(seed, key) for key in batch.keys]
        hidden = hidden_cells(x * y * z, ratio, generators).to(image.device)
        voxels = cells_to_voxels(hidden, self.grid, self.cell).to(image.dtype)
        # A token backbone takes the hidden tokens, a CNN the visible voxels.
        output = model(image, hidden) if self.backbone.tokens else model(image, 1 - voxels)
        error = output.float() - image.float()
        error = error.square() if self.options.loss == "mse" else error.abs()
        weight = voxels * scored
        total = (error * weight).sum()
        logs = {
            "hidden_fraction": float(voxels.mean()),
            "scored_fraction": float(weight.mean()),
        }
        return Loss(total, weight.sum().detach(), logs)
