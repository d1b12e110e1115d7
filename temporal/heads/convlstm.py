"""``convlstm``: a convolutional LSTM over the cached spatial feature maps of each frame.

Shi et al., "Convolutional LSTM network: a machine learning approach for precipitation
nowcasting", NeurIPS 2015: an LSTM whose input-to-state and state-to-state transitions are
convolutions, so its state is a map and keeps where things are. Several projects harx replaces
train one on raw 64x64 frames from scratch; here it runs on the frozen backbone's last-stage maps
(``harx extract --spatial``: streams ``rgb_map``, ``motion_map``, ``(C, S, S)`` per frame), so it
trains in minutes on a CPU.

The network: standardise each frame's map (training-set mean and std per channel and position)
-> a 1x1 convolution to ``proj_channels`` (BatchNorm-free: the standardisation did that), ReLU,
dropout -> ``num_layers`` ConvLSTM cells with ``hidden_channels`` and a ``kernel_size`` x
``kernel_size`` kernel, run frame by frame (a sample's state stops changing after its last frame,
so padding never reaches it) -> the final state (``pooling="last"``) or the mean of the states
over time (``"mean"``), averaged over the map's positions -> dropout -> Linear to the classes.
The cell has no peephole terms (the Hadamard products with the cell state in Shi et al.'s
equations 3), as most implementations: they add parameters and cost for no reported gain here.
"""

from __future__ import annotations

import torch
from torch import nn

from harx.features.errors import InvalidOptionError

from ..layers import Standardize
from ..registry import register_head
from ..training import TorchHead, check_range

__all__ = ["ConvLSTMCell", "ConvLSTMHead"]

POOLINGS = ("last", "mean")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: the four gates from one convolution over ``[x_t, h_{t-1}]``."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _ConvLSTMNet(nn.Module):
    def __init__(self, num_features: int, num_classes: int, map_size: int, proj_channels: int,
                 hidden_channels: int, num_layers: int, kernel_size: int, dropout: float, pooling: str):
        super().__init__()
        self.map_size, self.channels = map_size, num_features // (map_size * map_size)
        self.standardize = Standardize(num_features)
        self.proj = nn.Sequential(nn.Conv2d(self.channels, proj_channels, 1), nn.ReLU(), nn.Dropout(dropout))
        self.cells = nn.ModuleList(ConvLSTMCell(proj_channels if k == 0 else hidden_channels, hidden_channels,
                                                kernel_size) for k in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.pooling = pooling
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_channels, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        S = self.map_size
        maps = self.proj(self.standardize(x).reshape(B * L, self.channels, S, S)).reshape(B, L, -1, S, S)
        lengths = lengths.to(x.device)
        states = [(maps.new_zeros(B, cell.hidden_channels, S, S),) * 2 for cell in self.cells]
        total = maps.new_zeros(B, self.cells[-1].hidden_channels, S, S)
        for t in range(L):
            live = (lengths > t).to(maps.dtype)[:, None, None, None]   # 0 once a sample has ended
            inp = maps[:, t]
            for k, cell in enumerate(self.cells):
                h, c = cell(inp, states[k])
                h_old, c_old = states[k]
                states[k] = (live * h + (1 - live) * h_old, live * c + (1 - live) * c_old)
                inp = self.drop(states[k][0]) if k + 1 < len(self.cells) else states[k][0]
            if self.pooling == "mean":
                total = total + live * states[-1][0]
        if self.pooling == "mean":
            feat = total / lengths.to(total.dtype)[:, None, None, None]
        else:
            feat = states[-1][0]
        return self.classify(feat.mean(dim=(2, 3)))


class ConvLSTMHead(TorchHead):
    """A ConvLSTM over each frame's spatial feature map (see the module docstring).

    Parameters
    ----------
    map_size : int
        The maps' side ``S`` (features are ``C x S x S`` per frame); set by ``harx fit`` from the
        cache's map streams.
    proj_channels : int
        Channels of the 1x1 projection before the cells (320 stage channels per stream in, for lite0).
    hidden_channels : int
        Channels of each cell's state.
    num_layers : int
        Stacked ConvLSTM cells.
    kernel_size : int
        Side of the cells' square kernel (odd).
    dropout : float
        After the projection, between cells, and before the classifier.
    pooling : "last" | "mean"
        What the classifier sees: the final state, or the mean of the states over time.
    Other parameters: see :class:`~temporal.training.TorchHead`.
    """

    name = "convlstm"
    strategy = "ConvLSTM over spatial feature maps"
    takes_maps = True

    def __init__(self, *, num_features: int, num_classes: int, map_size: int | None = None, proj_channels: int = 64,
                 hidden_channels: int = 64, num_layers: int = 1, kernel_size: int = 3, dropout: float = 0.3,
                 pooling: str = "last", epochs: int | None = None, patience: int | None = None, batch_size: int = 32,
                 lr: float = 2e-3, weight_decay: float = 1e-2, crop_frames: int = 32, max_stride: int = 1,
                 device: str = "auto", precision: str = "auto", random_state: int = 0):
        self._keep_params(locals())

    @property
    def aggregation(self) -> str:  # type: ignore[override]
        what = "its final state" if self.pooling == "last" else "the mean of its states over time"
        return (f"each frame's {self.map_size}x{self.map_size} feature map in order through a {self.num_layers}-layer "
                f"ConvLSTM ({self.kernel_size}x{self.kernel_size} kernels); the sample is classified from {what}, "
                "averaged over the map")

    def _validate_params(self) -> None:
        for key in ("proj_channels", "hidden_channels", "num_layers", "kernel_size"):
            check_range(key, getattr(self, key), 1, None, integer=True)
        if self.kernel_size % 2 == 0:
            raise InvalidOptionError(f"kernel_size must be odd (the map keeps its size), got {self.kernel_size}")
        check_range("dropout", self.dropout, 0.0, 1.0, open_high=True)
        if self.pooling not in POOLINGS:
            raise InvalidOptionError(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        size = self.map_size
        if size is None:
            raise InvalidOptionError("convlstm needs map_size: fit it on a cache's map streams (harx extract "
                                     "--spatial), which set it")
        check_range("map_size", size, 1, None, integer=True)
        if self.num_features % (size * size):
            raise InvalidOptionError(f"{self.num_features} features are not maps of {size}x{size} "
                                     f"({self.num_features / size ** 2:g} channels)")
        super()._validate_params()

    def _build_module(self) -> nn.Module:
        return _ConvLSTMNet(self.num_features, self.num_classes, int(self.map_size), self.proj_channels,
                            self.hidden_channels, self.num_layers, self.kernel_size, self.dropout, self.pooling)


@register_head
def convlstm(num_features: int, num_classes: int, **kwargs) -> ConvLSTMHead:
    """A ConvLSTM (Shi et al. 2015) over the cached spatial maps (harx extract --spatial)."""
    return ConvLSTMHead(num_features=num_features, num_classes=num_classes, **kwargs)
