"""Layers the torch heads share: input standardisation and the masked mean over time.

The training set's statistics live in the module's buffers (not in the run folder beside it), so a
checkpoint alone standardises new inputs as training did.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InputLinear", "Standardize", "masked_mean", "with_deltas"]


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training set's statistics, kept in the checkpoint."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(mean))
        self.inv_std.copy_(torch.from_numpy(1.0 / std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class InputLinear(nn.Module):
    """``Linear`` on standardised inputs, ``W ((x - mean) / std) + b``, without a standardised copy of x.

    The standardisation is folded into the weights (``W / std`` and ``b - (W / std) mean``): the
    frames are read once, by the matrix product, instead of once more to standardise them, and a
    frame-level head like ``vote`` does little else per frame. With ``dropout`` > 0, training
    standardises explicitly and drops standardised inputs.
    """

    def __init__(self, dim_in: int, dim_out: int, dropout: float = 0.0):
        super().__init__()
        self.norm = Standardize(dim_in)
        self.linear = nn.Linear(dim_in, dim_out)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout > 0:
            return self.linear(F.dropout(self.norm(x), self.dropout, True))
        w = self.linear.weight * self.norm.inv_std
        return F.linear(x, w, self.linear.bias - w @ self.norm.mean)


def with_deltas(h: torch.Tensor) -> torch.Tensor:
    """``(B, L, D)`` -> ``(B, L, 2D)``: each frame beside its change since the previous one (0 for
    the first), as speech recognisers add delta features: speed and direction become magnitudes
    a head reads directly instead of having to learn to compute them."""
    d = torch.cat([torch.zeros_like(h[:, :1]), h[:, 1:] - h[:, :-1]], dim=1)
    return torch.cat([h, d], dim=2)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``x`` (B, L, H), counting only the first ``lengths[b]`` steps."""
    L = x.shape[1]
    mask = (torch.arange(L, device=x.device)[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.to(x.device, x.dtype)[:, None]
