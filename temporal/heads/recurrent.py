"""``lstm`` and ``gru``: recurrent networks over the sequence of frame embeddings.

Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997; Cho et al., "Learning
phrase representations using RNN encoder-decoder", EMNLP 2014 (the GRU); Donahue et al.,
"Long-term recurrent convolutional networks for visual recognition and description", CVPR 2015
(a CNN per frame, then an LSTM: the design of harx's two stages).

The network: standardise each frame (training-set mean and std) -> input projection (Linear to
``proj_size``, LayerNorm, ReLU, dropout; ``proj_size=0`` skips it) -> with ``deltas``, each
projected frame joined by its difference from the previous one -> a ``num_layers``-layer
(optionally bidirectional) LSTM or GRU, with dropout between layers -> the final state
(``pooling="last"``; both directions' when bidirectional) or the mean or max of the outputs over
time -> dropout -> Linear to the classes. Each sample's last state is that of its own last frame:
a one-directional RNN runs on the padded batch (padding comes after a sample's end, where a
causal network cannot see it back) and reads each sample's output at its length; a bidirectional
one packs the batch (``pack_padded_sequence``) so the backward pass starts at each sample's end.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layers import InputLinear, Standardize, masked_mean, with_deltas
from ..registry import register_head
from ..training import TorchHead, check_range

__all__ = ["GRUHead", "LSTMHead", "RecurrentHead"]

POOLINGS = ("last", "mean", "max")


class _RecurrentNet(nn.Module):
    def __init__(self, cell: str, num_features: int, num_classes: int, proj_size: int, hidden_size: int,
                 num_layers: int, bidirectional: bool, dropout: float, pooling: str, deltas: bool):
        super().__init__()
        if proj_size > 0:
            self.proj = nn.Sequential(InputLinear(num_features, proj_size), nn.LayerNorm(proj_size), nn.ReLU(),
                                      nn.Dropout(dropout))
            width = proj_size
        else:
            self.proj = nn.Sequential(Standardize(num_features), nn.Dropout(dropout))
            width = num_features
        self.deltas = deltas
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(2 * width if deltas else width, hidden_size, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.pooling = pooling
        self.bidirectional = bidirectional
        out = hidden_size * (2 if bidirectional else 1)
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        if self.deltas:
            h = with_deltas(h)
        ragged = bool((lengths != lengths[0]).any())
        if self.bidirectional:
            # the backward direction must start at each sample's own last frame: pack when ragged
            if ragged:
                packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
                out, state = self.rnn(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
            else:
                out, state = self.rnn(h)
            h_n = state[0] if isinstance(state, tuple) else state          # (layers * dirs, B, H)
            last = torch.cat([h_n[-2], h_n[-1]], dim=1)                    # forward end, backward end
        else:
            # One direction is causal: padding after a sample's end cannot change its outputs up
            # to there, so the padded batch runs as one tensor (on a CPU, one fused oneDNN call
            # instead of a kernel per time step) and each sample's state is read at its own end.
            out, _ = self.rnn(h)
            last = out[torch.arange(len(out), device=out.device), lengths.to(out.device) - 1]
        if self.pooling == "last":
            feat = last
        elif self.pooling == "mean":
            feat = masked_mean(out, lengths)
        else:
            L = out.shape[1]
            pad = torch.arange(L, device=out.device)[None, :] >= lengths.to(out.device)[:, None]
            feat = out.masked_fill(pad[..., None], float("-inf")).amax(1)
        return self.classify(feat)


class RecurrentHead(TorchHead):
    """An LSTM or GRU over frame embeddings (``cell`` is fixed by the subclass).

    Parameters
    ----------
    hidden_size : int
        Units per direction of each recurrent layer.
    num_layers : int
        Stacked recurrent layers.
    bidirectional : bool
        Also run the sequence backwards and join both directions.
    dropout : float
        Dropout after the input projection, between layers, and before the classifier.
    proj_size : int
        Width of the input projection (Linear + LayerNorm + ReLU); 0 feeds the standardised
        embeddings straight to the RNN.
    pooling : "last" | "mean" | "max"
        What the classifier sees: the final hidden state, or the mean or max of the outputs.
    deltas : bool
        Feed the RNN each projected frame together with its difference from the previous frame
        (as speech recognisers add delta features): speed is then a magnitude it reads directly.
    crop_frames, max_stride : training crops (see :class:`~temporal.training.TorchHead`); the
        whole sample is used at evaluation.
    Other parameters: see :class:`~temporal.training.TorchHead`.
    """

    cell = "lstm"

    def __init__(self, *, num_features: int, num_classes: int, hidden_size: int = 128, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.4, proj_size: int = 128, pooling: str = "last",
                 deltas: bool = True,
                 epochs: int | None = None, patience: int | None = None, batch_size: int = 32, lr: float = 2e-3,
                 weight_decay: float = 1e-2, crop_frames: int = 32, max_stride: int = 1, device: str = "auto",
                 precision: str = "auto", random_state: int = 0):
        self._keep_params(locals())

    @property
    def aggregation(self) -> str:  # type: ignore[override]
        what = {"last": "its final hidden state", "mean": "the mean of its outputs over time",
                "max": "the max of its outputs over time"}.get(self.pooling, self.pooling)
        kind = f"{'bidirectional ' if self.bidirectional else ''}{self.num_layers}-layer {self.cell.upper()}"
        return f"frames in order through a {kind}; the sample is classified from {what}"

    def _validate_params(self) -> None:
        super()._validate_params()
        check_range("hidden_size", self.hidden_size, 1, None, integer=True)
        check_range("num_layers", self.num_layers, 1, None, integer=True)
        check_range("proj_size", self.proj_size, 0, None, integer=True)
        check_range("dropout", self.dropout, 0.0, 1.0, open_high=True)
        if self.pooling not in POOLINGS:
            from harx.features.errors import InvalidOptionError
            raise InvalidOptionError(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")

    def _build_module(self) -> nn.Module:
        return _RecurrentNet(self.cell, self.num_features, self.num_classes, self.proj_size, self.hidden_size,
                             self.num_layers, bool(self.bidirectional), self.dropout, self.pooling, bool(self.deltas))


class LSTMHead(RecurrentHead):
    __doc__ = RecurrentHead.__doc__
    name = "lstm"
    strategy = "LSTM over the frame sequence"
    cell = "lstm"


class GRUHead(RecurrentHead):
    __doc__ = RecurrentHead.__doc__
    name = "gru"
    strategy = "GRU over the frame sequence"
    cell = "gru"


@register_head
def lstm(num_features: int, num_classes: int, **kwargs) -> LSTMHead:
    """LSTM over frame embeddings (input projection, layers, hidden size, bidirectional, pooling)."""
    return LSTMHead(num_features=num_features, num_classes=num_classes, **kwargs)


@register_head
def gru(num_features: int, num_classes: int, **kwargs) -> GRUHead:
    """GRU over frame embeddings (same options as ``lstm``)."""
    return GRUHead(num_features=num_features, num_classes=num_classes, **kwargs)
