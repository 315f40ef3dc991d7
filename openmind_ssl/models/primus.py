"""Primus: the 3D vision transformer of the Primus paper (arXiv 2503.01835), with true MAE.

The network: a strided ``Conv3d`` cuts the volume into patches (``down_projection``), an EVA-02
style transformer encodes the tokens (``eva``, see ``eva.py``), and a light decoder of
transposed convolutions with ``LayerNormNd`` + GELU maps every token back to a patch of logits
(``up_projection``). Primus-M (:data:`PRIMUS_M`): width 864, 16 blocks, 12 heads, 8^3 patches,
SwiGLU hidden 2304, layer scale 0.1, inner attention norm; 151,786,529 parameters at input
160^3 (the absolute position embedding grows with the token grid: 145,316,897 at 64^3).

Why the names match ``dynamic_network_architectures`` 0.4.4 (dna): OpenMind's released
checkpoints, and any made by nnssl / nnU-Net, are dna state dicts. This module has exactly the
keys and shapes of dna's ``PrimusM(input_channels, output_channels, (8, 8, 8), input_shape)``
and the same forward function, so those checkpoints load with ``strict=True`` and give the same
outputs, without dna itself as a dependency (it imports timm, timm imports torchvision, and
PyPI's torchvision is a CUDA build that does not import beside CPU torch).

True MAE (``forward(x, keep)``): only the visible tokens enter the encoder, with the position
embedding and rotary table taken at their positions; the encoded tokens are put back in place
and the masked places filled with ``mask_token``; an optional small transformer (``decoder``,
as nnssl's EvaMAE) mixes the full sequence before ``up_projection``. All of it is batched
gather / scatter: no Python loop over the samples.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from openmind_data.errors import ConfigError
from openmind_ssl.models.eva import Eva, Grid

__all__ = [
    "PRIMUS_M",
    "LayerNormNd",
    "PatchDecode",
    "PatchEmbed",
    "Primus",
    "primus_m",
    "visible_voxels",
]

PRIMUS_M: dict[str, int] = {"embed_dim": 864, "depth": 16, "num_heads": 12}
"""The Primus-M transformer size (dna's ``_PRIMUS_CONFIGS["M"]``)."""


class LayerNormNd(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, *spatial)`` tensor (eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(1, keepdim=True)
        x = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class PatchEmbed(nn.Module):
    """A ``Conv3d`` with kernel = stride = patch size: ``(B, C_in, X, Y, Z) -> (B, dim, grid)``."""

    def __init__(self, patch_size: Grid, input_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(input_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.proj(x)
        return out


def decoder_plan(
    patch_size: Grid, embed_dim: int, out_channels: int
) -> tuple[list[int], list[Grid]]:
    """Channels and strides of :class:`PatchDecode`, by dna's rule.

    ``log2(max(patch_size))`` stages each double the axes whose patch size still has a factor of
    2 left; the widths shrink geometrically from ``embed_dim`` towards ``2 * out_channels``,
    rounded to multiples of 8 (at least 8), and the last is ``out_channels``.
    """
    num_stages = max(patch_size).bit_length() - 1
    strides: list[Grid] = [
        (
            2 if patch_size[0] % 2 ** (n + 1) == 0 else 1,
            2 if patch_size[1] % 2 ** (n + 1) == 0 else 1,
            2 if patch_size[2] % 2 ** (n + 1) == 0 else 1,
        )
        for n in reversed(range(num_stages))
    ]
    reduction = (embed_dim / (2 * out_channels)) ** (1 / num_stages)
    channels = [embed_dim] + [
        int(max(8, round((embed_dim / reduction ** (s + 1) + 1e-6) / 8) * 8))
        for s in range(num_stages)
    ]
    channels[-1] = out_channels
    return channels, strides


class PatchDecode(nn.Module):
    """Token grid to voxels: transposed convs (kernel = stride), LayerNormNd + GELU between."""

    def __init__(self, patch_size: Grid, embed_dim: int, out_channels: int) -> None:
        super().__init__()
        channels, strides = decoder_plan(patch_size, embed_dim, out_channels)
        stages: list[nn.Module] = [
            nn.Sequential(
                nn.ConvTranspose3d(channels[s], channels[s + 1], kernel_size=stride, stride=stride),
                LayerNormNd(channels[s + 1]),
                nn.GELU(),
            )
            for s, stride in enumerate(strides[:-1])
        ]
        stages.append(
            nn.ConvTranspose3d(
                channels[-2], channels[-1], kernel_size=strides[-1], stride=strides[-1]
            )
        )
        self.decode = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.decode(x)
        return out


def _he_init(module: nn.Module) -> None:
    """dna's ``InitWeights_He(1e-2)`` for the convolutions of the stem and the decoder."""
    if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Primus(nn.Module):
    """Primus: patch embedding, EVA transformer, patch decoder; optionally a true MAE.

    Args:
        input_channels: channels of the input volume.
        num_classes: channels of the output (segmentation classes, or reconstructed channels).
        embed_dim, depth, num_heads: the transformer's size. ``embed_dim / num_heads`` must be a
            multiple of 6 (the 3D rotary embedding uses ``head_dim / 1.5``, divisible by 4).
        patch_size: voxels per token along each axis, powers of two (the decoder halves them).
        input_shape: the one spatial input shape; the position embedding is sized for it.
        mlp_ratio: SwiGLU hidden width over ``embed_dim``.
        drop_path_rate: stochastic depth of the last block (linear from 0 over the blocks).
        init_values: layer scale's initial value; None leaves layer scale out.
        scale_attn_inner: LayerNorm on the attention output before its projection.
        decoder_depth: blocks of the MAE decoder transformer (0: none, dna's Primus). With a
            decoder, ``mask_token`` is a learned parameter (dna: a zero buffer); same key.
    """

    key_to_encoder: ClassVar[str] = "eva"
    key_to_stem: ClassVar[str] = "down_projection"
    keys_to_in_proj: ClassVar[tuple[str, ...]] = ("down_projection.proj",)
    key_to_lpe: ClassVar[str] = "eva.pos_embed"

    mask_token: Tensor
    decoder: Eva | None

    def __init__(
        self,
        input_channels: int = 1,
        num_classes: int = 1,
        *,
        embed_dim: int = 864,
        depth: int = 16,
        num_heads: int = 12,
        patch_size: tuple[int, int, int] = (8, 8, 8),
        input_shape: tuple[int, int, int] = (160, 160, 160),
        mlp_ratio: float = 8 / 3,
        drop_path_rate: float = 0.0,
        init_values: float | None = 0.1,
        scale_attn_inner: bool = True,
        decoder_depth: int = 0,
    ) -> None:
        super().__init__()
        patch_size = _check_patch_size(patch_size)
        input_shape = _check_input_shape(input_shape, patch_size)
        if input_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"input_channels {input_channels} and num_classes {num_classes} must be >= 1"
            )
        if decoder_depth < 0:
            raise ConfigError(f"decoder_depth {decoder_depth} must be >= 0")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate {drop_path_rate} must lie in [0, 1)")
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.input_shape = input_shape
        grid = self.token_grid()
        transformer: dict[str, Any] = {
            "mlp_ratio": mlp_ratio,
            "drop_path_rate": drop_path_rate,
            "init_values": init_values,
            "scale_attn_inner": scale_attn_inner,
        }
        # dna's construction order (one seed gives both the same initial weights).
        self.down_projection = PatchEmbed(patch_size, input_channels, embed_dim)
        self.up_projection = PatchDecode(patch_size, embed_dim, num_classes)
        self.eva = Eva(embed_dim, depth, num_heads, grid, **transformer)
        if decoder_depth > 0:
            self.decoder = Eva(embed_dim, decoder_depth, num_heads, grid, **transformer)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            nn.init.normal_(self.mask_token, std=1e-6)
        else:
            self.decoder = None
            self.register_buffer("mask_token", torch.zeros(1, 1, embed_dim))
        self.down_projection.apply(_he_init)
        self.up_projection.apply(_he_init)

    def token_grid(self) -> tuple[int, int, int]:
        """Tokens per axis for ``input_shape``."""
        x, y, z = (s // p for s, p in zip(self.input_shape, self.patch_size, strict=True))
        return x, y, z

    @property
    def num_tokens(self) -> int:
        """Tokens per volume: ``prod(token_grid())``."""
        return math.prod(self.token_grid())

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Logits ``(B, num_classes, *input_shape)`` of a batch ``(B, input_channels,
        *input_shape)``.

        ``keep``: ``(B, n_keep)`` int64 indices of the visible tokens (C order over
        :meth:`token_grid`, distinct within a row). The encoder then sees only those tokens;
        the others reach the decoder as ``mask_token``. Without ``keep`` (and without a
        decoder) this is dna's ``Primus.forward``.
        """
        tokens = self.embed(x)
        b, _, c = tokens.shape
        w, h, d = self.token_grid()
        if keep is None:
            encoded = self.eva(tokens)
        else:
            self._check_keep(keep, b)
            tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, c))
            encoded = self.restore_sequence(self.eva(tokens, keep), keep)
        if self.decoder is not None:
            encoded = self.decoder(encoded)
        volume = encoded.transpose(1, 2).reshape(b, c, w, h, d)
        logits: Tensor = self.up_projection(volume)
        return logits

    def embed(self, x: Tensor) -> Tensor:
        """The patch tokens ``(B, N, embed_dim)`` of ``x``, before the transformer."""
        self._check_input(x)
        tokens: Tensor = self.down_projection(x)
        return tokens.flatten(2).transpose(1, 2)  # dna's "b c w h d -> b (w h d) c"

    def encode(self, x: Tensor) -> Tensor:
        """The encoder's output tokens ``(B, N, embed_dim)`` of ``x`` (every token visible)."""
        encoded: Tensor = self.eva(self.embed(x))
        return encoded

    def restore_sequence(self, tokens: Tensor, keep: Tensor) -> Tensor:
        """Full sequences ``(B, N, C)``: ``tokens`` ``(B, n_keep, C)`` at ``keep``, the mask
        token everywhere else."""
        b, _, c = tokens.shape
        filler = self.mask_token.to(tokens.dtype).expand(b, self.num_tokens, c)
        return filler.scatter(1, keep.unsqueeze(-1).expand(-1, -1, c), tokens)

    def visible_voxels(self, keep: Tensor) -> Tensor:
        """Boolean ``(B, 1, *input_shape)``: True on the voxels of the tokens at ``keep``."""
        return visible_voxels(keep, self.token_grid(), self.patch_size)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"Primus expects (B, {self.input_channels}, X, Y, Z) input, got {tuple(x.shape)}"
            )
        if tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(
                f"Primus was built for input_shape {self.input_shape}, got spatial shape "
                f"{tuple(x.shape[2:])}: crop or pad to it, or build the model for that shape "
                f"(the position embedding would need interpolating)"
            )

    def _check_keep(self, keep: Tensor, batch: int) -> None:
        if keep.dtype != torch.int64 or keep.ndim != 2 or keep.shape[0] != batch:
            raise ValueError(
                f"keep must be an int64 tensor (B={batch}, n_keep), got {keep.dtype} "
                f"{tuple(keep.shape)}"
            )
        if not 1 <= keep.shape[1] <= self.num_tokens:
            raise ValueError(
                f"keep holds {keep.shape[1]} tokens per sample; 1 to {self.num_tokens} are allowed"
            )


def visible_voxels(keep: Tensor, grid: Grid, patch_size: Grid) -> Tensor:
    """Boolean ``(B, 1, *voxels)``: True on the voxels of the tokens at ``keep`` ``(B, n_keep)``
    of a ``grid`` of tokens of ``patch_size`` voxels (tokens in C order, as Primus numbers them)."""
    visible = torch.zeros(keep.shape[0], math.prod(grid), dtype=torch.bool, device=keep.device)
    visible.scatter_(1, keep, True)
    voxels = visible.view(keep.shape[0], 1, *grid)
    for axis, size in enumerate(patch_size, start=2):
        voxels = voxels.repeat_interleave(size, dim=axis)
    return voxels


def _check_patch_size(patch_size: tuple[int, ...]) -> Grid:
    if len(patch_size) != 3 or any(p < 1 or p & (p - 1) for p in patch_size) or max(patch_size) < 2:
        raise ConfigError(
            f"patch_size {patch_size} must be three powers of two, at least one of them >= 2 "
            "(the decoder doubles the grid stage by stage)"
        )
    return patch_size[0], patch_size[1], patch_size[2]


def _check_input_shape(input_shape: tuple[int, ...], patch_size: Grid) -> Grid:
    if len(input_shape) != 3 or any(
        s < 1 or s % p for s, p in zip(input_shape, patch_size, strict=False)
    ):
        raise ConfigError(
            f"input_shape {input_shape} must be three sizes divisible by patch_size {patch_size}"
        )
    return input_shape[0], input_shape[1], input_shape[2]


def primus_m(
    input_channels: int = 1,
    num_classes: int = 1,
    *,
    input_shape: tuple[int, int, int] = (160, 160, 160),
    **overrides: Any,
) -> Primus:
    """Primus-M (dna's ``PrimusM(input_channels, num_classes, (8, 8, 8), input_shape)``), with
    any :class:`Primus` keyword overridden (e.g. ``decoder_depth=2`` for MAE pretraining)."""
    options: dict[str, Any] = {**PRIMUS_M, **overrides}
    return Primus(input_channels, num_classes, input_shape=input_shape, **options)
