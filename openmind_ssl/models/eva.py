"""The EVA-02 style transformer of Primus: pre-norm blocks with 3D rotary position embedding.

What a block computes (timm's ``EvaBlock`` as ``dynamic_network_architectures`` configures it):

* attention: separate ``q_proj`` / ``k_proj`` / ``v_proj`` (no key bias), the rotary embedding
  applied to queries and keys, ``torch.nn.functional.scaled_dot_product_attention``, an optional
  LayerNorm on the heads' output before ``proj`` ("scale_attn_inner");
* MLP: SwiGLU with separate gate and value projections and a LayerNorm on the hidden features
  ("scale_mlp");
* layer scale (``gamma_1`` / ``gamma_2``) and stochastic depth on both residual branches.

Rotary position embedding (timm ``RotaryEmbeddingCat`` semantics, ``in_pixels=False``): a head
of ``head_dim`` channels is rotated in pairs. Each of the three axes gets ``rope_dim / 4``
frequencies ``temperature ** -(i / (rope_dim / 4))``; three axes times that many frequencies
times two channels per pair give ``head_dim = 1.5 * rope_dim``. So ``rope_dim = head_dim / 1.5``
must be a whole number divisible by 4, which is to say ``head_dim`` must be a multiple of 6
(Primus-M: 864 / 12 heads = 72, rope_dim 48). The table is a non-persistent buffer: it is not in
the state dict, exactly as in the reference. For a subset of tokens (MAE) the rows are
gathered per sample as ``(B, 1, n, 2 * head_dim)``, with the singleton head axis timm's own Eva
adds; dna 0.4.4's patch-dropout path leaves it out and fails (or, when the batch size equals
the number of heads, silently mixes samples) for batches larger than one.

Attribute names (``blocks.0.attn.q_proj``, ``blocks.0.mlp.fc1_g``, ``gamma_1``, ...) are those of
the reference so that its checkpoints load with ``strict=True``; see ``primus.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError

__all__ = [
    "DropPath",
    "Eva",
    "EvaAttention",
    "EvaBlock",
    "RotaryEmbedding3d",
    "SwiGLU",
    "apply_rotary",
    "rope_dim_for",
    "rotary_table",
    "trunc_normal_",
]

Grid = tuple[int, int, int]


def rope_dim_for(embed_dim: int, num_heads: int) -> int:
    """The rotary dimension of a 3D head: ``head_dim / 1.5``, checked to be usable.

    Raises ConfigError (a ValueError) unless ``embed_dim`` splits evenly into heads and the head
    width is a multiple of 6, so that ``rope_dim`` is an integer divisible by 4.
    """
    if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
        raise ConfigError(
            f"embed_dim {embed_dim} must be a positive multiple of num_heads {num_heads}"
        )
    head_dim = embed_dim // num_heads
    if head_dim % 6:
        raise ConfigError(
            f"head_dim {head_dim} (embed_dim {embed_dim} / {num_heads} heads) must be a multiple "
            f"of 6: the 3D rotary embedding uses rope_dim = head_dim / 1.5, which must be an "
            f"integer divisible by 4 (e.g. embed_dim 72 with 3 heads: head_dim 24, rope_dim 16)"
        )
    return head_dim * 2 // 3


def rotary_table(
    grid: Grid, rope_dim: int, *, ref_grid: Grid | None = None, temperature: float = 10000.0
) -> Tensor:
    """The concatenated ``[sin, cos]`` rotary table of a token grid: ``(prod(grid), 3 * rope_dim)``.

    Row ``(w * H + h) * D + d`` belongs to token ``(w, h, d)`` (C order, as the tokens are
    flattened). Each half has ``1.5 * rope_dim = head_dim`` columns: per axis, per frequency, one
    value repeated for the two channels of a rotated pair. Coordinates are token indices, scaled
    by ``ref_grid / grid`` (EVA's rule for another grid than the pretraining one).
    """
    ref = grid if ref_grid is None else ref_grid
    num_bands = rope_dim // 4
    exponents = torch.arange(num_bands, dtype=torch.float32) / num_bands
    bands = 1.0 / (temperature**exponents)
    # Rescaled even when ref == grid, so that the float32 values match timm's bit for bit.
    axes = [
        torch.arange(size, dtype=torch.float32) / size * r
        for size, r in zip(grid, ref, strict=True)
    ]
    coords = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)  # (W, H, D, 3)
    angles = (coords.unsqueeze(-1) * bands).reshape(math.prod(grid), -1)  # (N, 3 * num_bands)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    return torch.cat([sin, cos], dim=-1)


def apply_rotary(x: Tensor, table: Tensor) -> Tensor:
    """Rotate the interleaved channel pairs ``(x0, x1), (x2, x3), ...`` of ``x`` by the table.

    ``table`` is ``[sin, cos]`` along its last axis and broadcasts against ``x`` (``(..., N,
    head_dim)``), e.g. ``(N, 2 * head_dim)`` or ``(B, 1, N, 2 * head_dim)``.
    """
    sin, cos = table.chunk(2, dim=-1)
    # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
    turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + turned * sin


def trunc_normal_(tensor: Tensor, std: float, bound: float = 2.0) -> Tensor:
    """Fill ``tensor`` in place from N(0, std^2) truncated to ``[-bound, bound]``.

    By the inverse CDF of one uniform draw per value, as timm does (and so dna): one seed then
    gives dna's initial weights. ``torch.nn.init.trunc_normal_`` samples the same law, but its
    newer rejection sampler draws a different random stream.
    """

    def cdf(value: float) -> float:
        return (1.0 + math.erf(value / std / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        tensor.uniform_(2.0 * cdf(-bound) - 1.0, 2.0 * cdf(bound) - 1.0)
        tensor.erfinv_().mul_(std * math.sqrt(2.0))
        return tensor.clamp_(-bound, bound)


class RotaryEmbedding3d(nn.Module):
    """The rotary table of a fixed token grid, held as a non-persistent buffer."""

    table: Tensor

    def __init__(self, rope_dim: int, grid: Grid, *, ref_grid: Grid | None = None) -> None:
        super().__init__()
        if rope_dim <= 0 or rope_dim % 4:
            raise ConfigError(f"rope_dim {rope_dim} must be a positive multiple of 4")
        self.rope_dim = rope_dim
        self.grid = grid
        self.register_buffer("table", rotary_table(grid, rope_dim, ref_grid=ref_grid), False)

    def forward(self, keep: Tensor | None = None) -> Tensor:
        """The whole table ``(N, 2 * head_dim)``, or its rows at ``keep`` (``(B, n)`` token
        indices) shaped ``(B, 1, n, 2 * head_dim)`` to broadcast over the heads."""
        if keep is None:
            return self.table
        return self.table[keep].unsqueeze(1)

    def extra_repr(self) -> str:
        return f"rope_dim={self.rope_dim}, grid={self.grid}"


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a whole sample with probability
    ``p`` and scale the survivors by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"drop path probability {p} must lie in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.p
        survives = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * survives.div_(keep_prob)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class EvaAttention(nn.Module):
    """Multi-head self-attention with rotary queries and keys and an optional inner LayerNorm."""

    def __init__(self, dim: int, num_heads: int, *, scale_inner: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.norm: nn.Module = nn.LayerNorm(dim) if scale_inner else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q, k, v = (
            proj(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if rope is not None:
            # The table is float32; the result goes back to the activations' dtype (autocast).
            q = apply_rotary(q, rope).type_as(v)
            k = apply_rotary(k, rope).type_as(v)
        x = functional.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(b, n, c)
        out: Tensor = self.proj(self.norm(x))
        return out


class SwiGLU(nn.Module):
    """``fc2(norm(silu(fc1_g(x)) * fc1_x(x)))``: the gated MLP with a LayerNorm inside."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))
        return out


class EvaBlock(nn.Module):
    """A pre-norm transformer block: ``x + drop(gamma_1 * attn(norm1(x)))``, then the MLP alike.

    ``init_values=None`` leaves out layer scale (no ``gamma_*`` parameters).
    """

    gamma_1: nn.Parameter | None
    gamma_2: nn.Parameter | None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        drop_path: float,
        init_values: float | None,
        scale_attn_inner: bool,
    ) -> None:
        super().__init__()
        # Created in the reference's order, so one seed gives both the same initial weights.
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EvaAttention(dim, num_heads, scale_inner=scale_attn_inner)
        self.gamma_1 = None if init_values is None else nn.Parameter(init_values * torch.ones(dim))
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, int(dim * mlp_ratio))
        self.gamma_2 = None if init_values is None else nn.Parameter(init_values * torch.ones(dim))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor, rope: Tensor | None = None) -> Tensor:
        branch = self.attn(self.norm1(x), rope)
        if self.gamma_1 is not None:
            branch = self.gamma_1 * branch
        x = x + self.drop_path1(branch)
        branch = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            branch = self.gamma_2 * branch
        out: Tensor = x + self.drop_path2(branch)
        return out


class Eva(nn.Module):
    """The token encoder: learned absolute position embedding, ``depth`` blocks, a final norm.

    Tokens come in C order over ``grid`` (``(B, prod(grid), C)``), or only some of them with
    ``keep``: then the position embedding and the rotary table are taken at those positions.
    Initialisation as the reference: truncated normal (std 0.02) for every Linear weight and the
    position embedding, zero biases, ``attn.proj`` and ``mlp.fc2`` of block ``i`` (from 1)
    divided by ``sqrt(2 i)``; drop path rates rise linearly from 0 to ``drop_path_rate``.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        grid: Grid,
        *,
        mlp_ratio: float = 8 / 3,
        drop_path_rate: float = 0.0,
        init_values: float | None = None,
        scale_attn_inner: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth {depth} must be at least 1")
        rope_dim = rope_dim_for(embed_dim, num_heads)
        self.embed_dim = embed_dim
        self.grid = grid
        self.num_patches = math.prod(grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.rope = RotaryEmbedding3d(rope_dim, grid)
        # Plain floats (not torch.linspace), so that the model can be built on the meta device.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            EvaBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                drop_path=rate,
                init_values=init_values,
                scale_attn_inner=scale_attn_inner,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks, start=1):
                assert isinstance(block, EvaBlock)
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Encode tokens ``(B, n, C)``: all of them, or those at ``keep`` ``(B, n)``."""
        expected = self.num_patches if keep is None else keep.shape[1]
        if x.ndim != 3 or x.shape[1] != expected or x.shape[2] != self.embed_dim:
            raise ValueError(
                f"Eva expects tokens (B, {expected}, {self.embed_dim}), got {tuple(x.shape)}"
            )
        pos = self.pos_embed if keep is None else self.pos_embed[0][keep]
        rope = self.rope(keep)
        x = x + pos
        for block in self.blocks:
            x = block(x, rope)
        out: Tensor = self.norm(x)
        return out
