"""Low-rank adaptation (LoRA) of the fused ``qkv`` projection of a frozen attention layer.

As in SAMed (and the SynFoC reference): rank-r updates on the query and value outputs only, the
key untouched, no alpha/r scaling and no dropout. A is Kaiming-uniform (a = sqrt(5)), B is zero,
so an adapted model starts out computing exactly what the frozen one does.

Where q and v live inside the fused output differs between encoders: SAM's ViT lays it out as
three contiguous blocks [q | k | v]; TinyViT (LiteMedSAM) lays it out per head,
[q_0 | k_0 | v_0 | q_1 | k_1 | v_1 | ...]. :class:`LoRAQKV` takes the output channels of q and v
as index lists, built by :func:`vit_qkv_index` or :func:`per_head_qkv_index`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LowRank(nn.Module):
    """x -> B(A(x)) with A: Linear(in -> r), B: Linear(r -> out), both without bias."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))


def vit_qkv_index(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output channels of q and v in SAM ViT's fused qkv: [q | k | v], ``dim`` channels each."""
    return torch.arange(dim), torch.arange(2 * dim, 3 * dim)


def per_head_qkv_index(
    num_heads: int, key_dim: int, value_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output channels of q and v in TinyViT's fused qkv, laid out per head as [q | k | v].

    Head h occupies channels ``h * (2 * key_dim + value_dim)`` onwards: q (key_dim), k (key_dim),
    v (value_dim). q is returned head-major (h * key_dim + j), the order of the q tensor that
    ``view(B, N, heads, -1).split(...)`` produces; likewise v.
    """
    stride = 2 * key_dim + value_dim
    start = torch.arange(num_heads)[:, None] * stride
    q = (start + torch.arange(key_dim)).flatten()
    v = (start + 2 * key_dim + torch.arange(value_dim)).flatten()
    return q, v


class LoRAQKV(nn.Module):
    """A fused qkv Linear plus LoRA on its q and v outputs.

    The frozen ``weight`` and ``bias`` are the original Linear's parameters, registered under the
    same names, so ``...attn.qkv.weight`` still matches pretrained checkpoints; the adapters are
    ``...attn.qkv.lora_q.{A,B}.weight`` and ``...attn.qkv.lora_v.{A,B}.weight``.

    Arguments:
      qkv (nn.Linear): the fused projection, in_features -> out_features.
      rank (int): LoRA rank r.
      q_index (torch.Tensor): long (Dq,), the output channels holding q.
      v_index (torch.Tensor): long (Dv,), the output channels holding v.
    """

    def __init__(
        self, qkv: nn.Linear, rank: int, q_index: torch.Tensor, v_index: torch.Tensor
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features = qkv.in_features
        self.out_features = qkv.out_features
        self.rank = rank
        self.weight = qkv.weight
        self.bias = qkv.bias
        self.lora_q = LowRank(qkv.in_features, len(q_index), rank)
        self.lora_v = LowRank(qkv.in_features, len(v_index), rank)
        self.register_buffer("index", torch.cat([q_index, v_index]).long(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          x (torch.Tensor): ...x(in_features).

        Returns:
          torch.Tensor: ...x(out_features), qkv(x) + [B_q A_q x on q, B_v A_v x on v].
        """
        out = F.linear(x, self.weight, self.bias)
        # Both adapters as one rank-2r product: u = [A_q; A_v] x, delta = up @ u, where `up`
        # (out_features x 2r) holds B_q and B_v in the q and v rows and zeros elsewhere. This
        # avoids writing into slices of `out` and costs two thin matmuls and one fused add.
        down = torch.cat([self.lora_q.A.weight, self.lora_v.A.weight], dim=0)
        blocks = torch.block_diag(self.lora_q.B.weight, self.lora_v.B.weight)
        up = blocks.new_zeros(self.out_features, 2 * self.rank).index_copy(0, self.index, blocks)
        u = F.linear(x, down).flatten(0, -2)
        adapted = torch.addmm(out.flatten(0, -2), u, up.t().to(u.dtype))
        return adapted.view_as(out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def add_lora(attention: nn.Module, rank: int, q_index: torch.Tensor, v_index: torch.Tensor) -> None:
    """Replace ``attention.qkv`` (an nn.Linear) by a :class:`LoRAQKV` around it, in place."""
    attention.qkv = LoRAQKV(attention.qkv, rank, q_index, v_index)


def lora_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every LoRA adapter inside ``module``, names relative to it."""
    found = []
    for prefix, child in module.named_modules():
        if isinstance(child, LoRAQKV):
            for part in ("lora_q", "lora_v"):
                for name, p in getattr(child, part).named_parameters():
                    found.append((f"{prefix}.{part}.{name}" if prefix else f"{part}.{name}", p))
    return found
