"""``meanpool``: an MLP on the average of a sample's frame embeddings (bag of frames).

The baseline a fair comparison needs beside ``vote``: it sees every frame, as the LSTM does, but
not their order. The network: standardise -> mean over the sample's frames -> dropout -> Linear
-> ReLU -> dropout -> Linear to the classes (``hidden_size=0``: a linear classifier on the mean).
Training uses random temporal crops, as the recurrent heads do.
"""

from __future__ import annotations

from torch import nn

from ..layers import Standardize, masked_mean
from ..registry import register_head
from ..training import TorchHead, check_range

__all__ = ["MeanPoolHead"]


class _MeanPoolNet(nn.Module):
    def __init__(self, num_features: int, num_classes: int, hidden_size: int, dropout: float):
        super().__init__()
        self.norm = Standardize(num_features)
        if hidden_size > 0:
            self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, hidden_size), nn.ReLU(),
                                          nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        else:
            self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def forward(self, x, lengths):
        return self.classify(self.norm(masked_mean(x, lengths)))   # standardise the (B, D) mean: cheap


class MeanPoolHead(TorchHead):
    """MLP on the mean frame embedding: order-blind, like ``vote``, but learned on whole samples.

    Parameters
    ----------
    hidden_size : int
        Hidden units of the MLP (0: linear classifier on the mean embedding).
    dropout : float
        Dropout on the mean embedding and on the hidden layer.
    Other parameters: see :class:`~temporal.training.TorchHead`.
    """

    name = "meanpool"
    strategy = "bag of frames: mean-pooled features + MLP"
    aggregation = "mean of the frame embeddings, then an MLP (frame order ignored)"

    def __init__(self, *, num_features: int, num_classes: int, hidden_size: int = 256, dropout: float = 0.3,
                 epochs: int | None = None, patience: int | None = None, batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 1e-2, crop_frames: int = 64, max_stride: int = 1, device: str = "auto",
                 precision: str = "auto", random_state: int = 0):
        self._keep_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        check_range("hidden_size", self.hidden_size, 0, None, integer=True)
        check_range("dropout", self.dropout, 0.0, 1.0, open_high=True)

    def _build_module(self) -> nn.Module:
        return _MeanPoolNet(self.num_features, self.num_classes, self.hidden_size, self.dropout)


@register_head
def meanpool(num_features: int, num_classes: int, **kwargs) -> MeanPoolHead:
    """MLP on the averaged frame embeddings: the bag-of-frames baseline."""
    return MeanPoolHead(num_features=num_features, num_classes=num_classes, **kwargs)
