"""``vote``: a per-frame classifier and a vote over the frames: the baseline every temporal head must beat.

Each frame embedding is classified on its own by a linear softmax layer (multinomial logistic
regression; ``hidden_size > 0`` puts one ReLU layer before it), trained with minibatches on
random frames of the training samples. A sample's label then comes from its frames in two ways,
both reported: the **mean of their probabilities** (what ``predict_proba`` returns, and what
model selection uses) and the **majority** of their per-frame labels (ties broken by the mean
probability). Frame order is never looked at, so classes that differ only in motion (order or
speed) are beyond it.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..layers import InputLinear
from ..registry import register_head
from ..training import TorchHead, check_range

__all__ = ["FrameVote"]


class _FrameClassifier(nn.Module):
    def __init__(self, num_features: int, num_classes: int, hidden_size: int, dropout: float):
        super().__init__()
        if hidden_size > 0:
            self.classify = nn.Sequential(InputLinear(num_features, hidden_size, dropout), nn.ReLU(),
                                          nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        else:
            self.classify = InputLinear(num_features, num_classes, dropout)

    def forward(self, x, lengths):
        return self.classify(x)                      # (B, L, C): one prediction per frame


class FrameVote(TorchHead):
    """Per-frame logistic regression with mean-probability and majority vote over a sample's frames.

    Parameters
    ----------
    hidden_size : int
        0 (default): logistic regression on the standardised embedding; > 0: one hidden ReLU layer.
    dropout : float
        Dropout on the input (and hidden) features while training.
    l2 : float
        L2 penalty ``l2 / 2 * ||W||^2`` on the weights (in standardised units; biases exempt), added
        to the mean per-frame cross-entropy: the regularisation of a ridge-penalised logistic
        regression (sklearn's ``C`` is about ``1 / (l2 * n_frames)``). Default 0.2. AdamW's decoupled
        ``weight_decay`` is no substitute: Adam normalises each coordinate's step, so decoupled decay
        does not shrink toward the L2 solution, and with a few hundred steps it barely acts at all.
        Unpenalised, this baseline fell far below a plain logistic regression on real data, which
        would flatter every temporal head beside it (``benchmarks/RESULTS.md``, "The vote baseline").
    crop_frames : int
        Random frames drawn from each training sample per epoch (all of them when fewer).
    Other parameters: see :class:`~temporal.training.TorchHead`.
    """

    name = "vote"
    strategy = "single-frame classification, frames voted"
    aggregation = ("each frame classified alone; sample probability = mean of its frames' probabilities "
                   "(majority vote of frame labels reported beside it)")
    frame_level = True
    auto_steps = 200          # a linear layer converges long before the recurrent heads do

    def __init__(self, *, num_features: int, num_classes: int, hidden_size: int = 0, dropout: float = 0.0,
                 epochs: int | None = None, patience: int | None = None, batch_size: int = 128, lr: float = 3e-2,
                 weight_decay: float = 0.0, l2: float = 0.2, crop_frames: int = 64, max_stride: int = 1,
                 device: str = "auto", precision: str = "auto", random_state: int = 0):
        self._keep_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        check_range("hidden_size", self.hidden_size, 0, None, integer=True)
        check_range("dropout", self.dropout, 0.0, 1.0, open_high=True)
        check_range("l2", self.l2, 0.0)

    def _loss(self, logits, target, lengths):
        """Mean per-frame cross-entropy plus the L2 penalty on the weights (see ``l2``)."""
        loss, proba = super()._loss(logits, target, lengths)
        if self.l2 > 0:
            w = [m.weight for m in self.module_.modules() if isinstance(m, nn.Linear)]
            loss = loss + 0.5 * self.l2 * sum((x.float() ** 2).sum() for x in w)
        return loss, proba

    def _build_module(self) -> nn.Module:
        return _FrameClassifier(self.num_features, self.num_classes, self.hidden_size, self.dropout)

    def predict_scores(self, X) -> dict[str, np.ndarray]:
        """``probability`` (mean of frame probabilities) and ``majority_vote`` (share of frames
        voting for each class, plus a tie-break of 1e-6 x the mean probability), each (N, C)."""
        s = self._scores(X)
        votes = s["votes"] + 1e-6 * s["probability"]
        return {"probability": s["probability"], "majority_vote": votes / votes.sum(1, keepdims=True)}


@register_head
def vote(num_features: int, num_classes: int, **kwargs) -> FrameVote:
    """Per-frame logistic regression, mean-probability and majority vote: the bag-of-frames baseline."""
    return FrameVote(num_features=num_features, num_classes=num_classes, **kwargs)
