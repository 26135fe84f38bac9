"""The projector: the small trainable bridge from audio encoder frames to LLM input embeddings.

Letters used in shape comments: B batch, T encoder frames, K stack size, C encoder width, H hidden width,
D LLM width.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (no mean subtraction, learned scale)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: bf16 squares of large activations lose too much precision.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Projector(nn.Module):
    """Stack K frames (50 Hz -> 50/K Hz), then RMSNorm -> SwiGLU MLP -> RMSNorm into the LLM width.

    Input B, T, C encoder frames; output B, ceil(T/K), D. The time axis is padded with zeros to a multiple
    of K, so the last position may hold fewer than K real frames.
    """

    def __init__(
        self,
        encoder_dim: int,
        llm_dim: int,
        stack_size: int = 5,
        hidden_dim: int = 2048,
        norm: bool = True,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stack_size = stack_size
        in_dim = encoder_dim * stack_size
        self.norm_pre = RMSNorm(in_dim, norm_eps) if norm else nn.Identity()
        self.gate_proj = nn.Linear(in_dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(in_dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, llm_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm_post = RMSNorm(llm_dim, norm_eps) if norm else nn.Identity()

    def output_length(self, num_frames: int | torch.Tensor) -> int | torch.Tensor:
        """Number of projected positions for `num_frames` encoder frames (ceil division by K)."""
        return -(-num_frames // self.stack_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, c = frames.shape  # B, T, C
        k = self.stack_size
        pad = (-t) % k
        if pad:
            frames = nn.functional.pad(frames, (0, 0, 0, pad))  # B, T+pad, C
        x = frames.reshape(b, (t + pad) // k, k * c)  # B, T/K, K*C
        x = self.norm_pre(x)
        x = self.down_proj(self.dropout(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x)))  # B, T/K, D
        return self.norm_post(x)
