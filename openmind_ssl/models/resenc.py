"""ResEnc-L: nnU-Net's residual-encoder U-Net at the size OpenMind pretrains.

The network is ``ResidualEncoderUNet`` from ``dynamic_network_architectures`` (dna) 0.4.4 as
nnssl's ``get_res_enc_l`` builds it: six stages of 32, 64, 128, 256, 320 and 320 features; 1, 3,
4, 6, 6 and 6 ResNet-D basic blocks per stage; 3x3x3 kernels; stride 1 in the first stage and 2
in every later one; conv biases; affine instance norm (eps 1e-5); leaky ReLU (slope 1e-2); one
conv per decoder stage. With one input channel and one output class it has 102,348,965
parameters (90,296,576 of them in the encoder). ResEnc-L is the "L" preset of "nnU-Net Revisited"
(Isensee et al., MICCAI 2024) and the CNN of "Revisiting MAE Pre-training for 3D Medical Image
Segmentation" (Wald et al., CVPR 2025) and of the OpenMind benchmark.

dna cannot be a dependency here (it requires timm, which imports torchvision), so this is a
compact re-implementation. Its module tree reproduces dna's wherever it shows in ``state_dict()``,
so that state dicts written by dna, nnU-Net or nnssl load with ``strict=True`` and ours load back
into them. That is why some names look odd:

* every conv-norm-act unit holds ``conv``, ``norm`` and ``nonlin`` and *also* an ``all_modules``
  Sequential of the same modules, so each weight appears twice (``...conv.weight`` and
  ``...all_modules.0.weight``);
* the stem is a stack of one unit (``encoder.stem.convs.0``), a stage is ``stages.{s}.blocks``;
* a block that changes resolution or width has the ResNet-D skip
  ``skip = Sequential(AvgPool3d, unit without bias or nonlinearity)``; a block that only changes
  resolution keeps the Sequential with the pooling alone (no keys);
* the decoder keeps a reference to the encoder, so every encoder tensor appears a second time
  under ``decoder.encoder.*`` (956 state-dict entries at full size for 264 distinct tensors);
* the decoder builds one 1x1x1 segmentation layer per stage even without deep supervision.

``state_dict()`` lists the keys in dna's order. :meth:`ResEncL.initialize` is dna's
``ResidualEncoderUNet.initialize`` and the constructor applies it the way nnU-Net does
(``network.apply(network.initialize)``): He-normal weights for every (transposed) conv, zero
biases, and the affine norm at the end of each block's residual branch set to zero, so every
block starts out passing on only its skip. nnssl's ``get_res_enc_l`` itself skips this step and
keeps PyTorch's default initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypedDict

import torch
from torch import Tensor, nn

from openmind_data.errors import ConfigError

__all__ = [
    "RESENC_L",
    "BasicBlockD",
    "ConvNormAct",
    "ConvStack",
    "ResEncL",
    "ResEncSize",
    "ResidualEncoder",
    "ResidualStack",
    "UNetDecoder",
]

KERNEL: Final = 3
STRIDE: Final = 2  # every stage after the first halves the resolution
NEG_SLOPE: Final = 1e-2  # leaky ReLU slope, and the "a" of the He initialisation
NORM_EPS: Final = 1e-5


class ResEncSize(TypedDict):
    """The width and depth of a residual-encoder U-Net, one entry per stage."""

    features_per_stage: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]


#: The OpenMind / nnssl ResEnc-L; ``ResEncL(**RESENC_L)`` is the default model.
RESENC_L: Final[ResEncSize] = {
    "features_per_stage": (32, 64, 128, 256, 320, 320),
    "blocks_per_stage": (1, 3, 4, 6, 6, 6),
}


class ConvNormAct(nn.Module):
    """Conv3d, affine InstanceNorm3d and (optionally) LeakyReLU: dna's ``ConvDropoutNormReLU``.

    The modules are registered twice, as attributes and in ``all_modules``, because dna's
    checkpoints hold both sets of keys. ``forward`` runs ``all_modules``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        bias: bool = True,
        nonlin: bool = True,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2  # "same" output size, divided by the stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.norm = nn.InstanceNorm3d(out_channels, eps=NORM_EPS, affine=True)
        self.nonlin: nn.LeakyReLU | None = None
        ops: list[nn.Module] = [self.conv, self.norm]
        if nonlin:
            self.nonlin = nn.LeakyReLU(NEG_SLOPE, inplace=True)
            ops.append(self.nonlin)
        self.all_modules = nn.Sequential(*ops)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.all_modules(x)
        return out


class ConvStack(nn.Module):
    """``num_convs`` 3x3x3 units in a row: dna's ``StackedConvBlocks`` (keys ``convs.*``)."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 1) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvNormAct(in_channels, out_channels, KERNEL),
            *(ConvNormAct(out_channels, out_channels, KERNEL) for _ in range(num_convs - 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.convs(x)
        return out


class BasicBlockD(nn.Module):
    """ResNet-D basic block (He et al., "Bag of Tricks", CVPR 2019), as dna's ``BasicBlockD``.

    ``nonlin2(conv2(conv1(x)) + skip(x))``; ``conv1`` carries the stride, ``conv2`` has no
    nonlinearity. The skip average-pools instead of striding its 1x1x1 projection, and projects
    only when the width changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, KERNEL, stride)
        self.conv2 = ConvNormAct(out_channels, out_channels, KERNEL, nonlin=False)
        self.nonlin2 = nn.LeakyReLU(NEG_SLOPE, inplace=True)
        skip: list[nn.Module] = []
        if stride != 1:
            skip.append(nn.AvgPool3d(stride, stride))
        if in_channels != out_channels:
            skip.append(ConvNormAct(in_channels, out_channels, 1, bias=False, nonlin=False))
        # dna's identity skip is a lambda; nn.Identity has no state either, so the keys agree.
        self.skip: nn.Module = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        residual = self.skip(x)
        out = self.conv2(self.conv1(x))
        out += residual
        activated: Tensor = self.nonlin2(out)
        return activated


class ResidualStack(nn.Module):
    """``num_blocks`` basic blocks, the first with ``stride``: dna's ``StackedResidualBlocks``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            BasicBlockD(in_channels, out_channels, stride),
            *(BasicBlockD(out_channels, out_channels) for _ in range(num_blocks - 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.blocks(x)
        return out


class ResidualEncoder(nn.Module):
    """A stem conv at full resolution, then one :class:`ResidualStack` per stage.

    ``forward`` returns every stage's output (the U-Net skips), full resolution first and the
    bottleneck last.
    """

    def __init__(
        self,
        input_channels: int,
        features_per_stage: Sequence[int],
        blocks_per_stage: Sequence[int],
    ) -> None:
        super().__init__()
        self.output_channels = tuple(features_per_stage)
        self.strides = (1,) + (STRIDE,) * (len(self.output_channels) - 1)
        self.stem = ConvStack(input_channels, self.output_channels[0])
        in_channels = self.output_channels[0]
        stages = []
        for out_channels, num_blocks, stride in zip(
            self.output_channels, blocks_per_stage, self.strides, strict=True
        ):
            stages.append(ResidualStack(in_channels, out_channels, num_blocks, stride))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """dna's ``UNetDecoder`` with one conv per stage, for a :class:`ResidualEncoder`.

    Stage ``s`` (deepest first) upsamples with a transposed conv, concatenates the matching skip
    and merges the two with one :class:`ConvNormAct`. ``encoder`` is kept as a submodule only
    because dna does so (its checkpoints hold ``decoder.encoder.*``); the decoder never calls it.
    """

    def __init__(
        self, encoder: ResidualEncoder, num_classes: int, *, deep_supervision: bool = False
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder
        channels, strides = encoder.output_channels, encoder.strides
        stages, transpconvs, seg_layers = [], [], []
        for below, skip, stride in zip(
            channels[:0:-1], channels[-2::-1], strides[:0:-1], strict=True
        ):
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=True))
            stages.append(ConvStack(2 * skip, skip))
            seg_layers.append(nn.Conv3d(skip, num_classes, 1, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)
        if not deep_supervision:
            # Only the last one is used; the others stay for dna's state dict but do not train
            # (and DDP must not wait for gradients they never get).
            for unused in seg_layers[:-1]:
                unused.requires_grad_(False)

    def forward(self, skips: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Full-resolution logits; with deep supervision one per stage, full resolution first."""
        x = skips[-1]
        outputs: list[Tensor] = []
        last = len(self.stages) - 1
        for s, (transpconv, stage, seg_layer) in enumerate(
            zip(self.transpconvs, self.stages, self.seg_layers, strict=True)
        ):
            x = stage(torch.cat((transpconv(x), skips[-(s + 2)]), dim=1))
            if self.deep_supervision or s == last:
                outputs.append(seg_layer(x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


class ResEncL(nn.Module):
    """ResEnc-L (defaults) or a narrower/shallower residual-encoder U-Net of the same design.

    ``features_per_stage`` and ``blocks_per_stage`` need one entry per stage (at least two
    stages); inputs need spatial sizes divisible by ``2 ** (stages - 1)`` (32 for ResEnc-L).
    ``forward`` returns ``(B, num_classes, X, Y, Z)`` logits, or with ``deep_supervision`` a list
    of one per decoder stage, full resolution first.
    """

    # Where nnssl's adaptation plan finds the encoder, the stem and the weights that depend on the
    # number of input channels (the stem conv, registered twice); no positional embedding.
    key_to_encoder = "encoder.stages"
    key_to_stem = "encoder.stem"
    keys_to_in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
    key_to_lpe: str | None = None

    def __init__(
        self,
        input_channels: int = 1,
        num_classes: int = 1,
        *,
        features_per_stage: Sequence[int] = RESENC_L["features_per_stage"],
        blocks_per_stage: Sequence[int] = RESENC_L["blocks_per_stage"],
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        _check_size(input_channels, num_classes, features_per_stage, blocks_per_stage)
        self.encoder = ResidualEncoder(input_channels, features_per_stage, blocks_per_stage)
        self.decoder = UNetDecoder(self.encoder, num_classes, deep_supervision=deep_supervision)
        # nnU-Net's order: Module.apply visits the shared encoder twice (once as decoder.encoder),
        # so with the same seed the weights equal those of a dna model nnU-Net builds.
        self.apply(self.initialize)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        out: Tensor | list[Tensor] = self.decoder(self.encoder(x))
        return out

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """dna's ``ResidualEncoderUNet.initialize``, for ``model.apply(model.initialize)``.

        He-normal (leaky ReLU slope 1e-2) weights and zero biases for convs and transposed convs;
        zero scale and shift for the norm that ends each block's residual branch.
        """
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(module.weight, a=NEG_SLOPE)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if isinstance(module, BasicBlockD):
            nn.init.zeros_(module.conv2.norm.weight)
            nn.init.zeros_(module.conv2.norm.bias)


def _check_size(
    input_channels: int,
    num_classes: int,
    features_per_stage: Sequence[int],
    blocks_per_stage: Sequence[int],
) -> None:
    if input_channels < 1 or num_classes < 1:
        raise ConfigError(
            f"ResEncL needs input_channels >= 1 and num_classes >= 1, "
            f"got {input_channels} and {num_classes}"
        )
    if len(features_per_stage) < 2 or len(features_per_stage) != len(blocks_per_stage):
        raise ConfigError(
            "ResEncL needs features_per_stage and blocks_per_stage of equal length (one entry "
            f"per stage, at least 2), got {tuple(features_per_stage)} and {tuple(blocks_per_stage)}"
        )
    if min(features_per_stage) < 1 or min(blocks_per_stage) < 1:
        raise ConfigError(
            "ResEncL needs at least one feature and one block per stage, got "
            f"{tuple(features_per_stage)} and {tuple(blocks_per_stage)}"
        )
