"""The head families, one file each; importing this package registers their heads.

As ``timm.models`` imports its family files: each family imports :func:`temporal.registry.register_head`
and decorates its entrypoints, and the registry itself imports no family, so imports go one way
(``harx.temporal`` imports this package, so every head is registered before anything is looked up).
Adding a family: a file here and one import line below.
"""

from .convlstm import ConvLSTMHead
from .meanpool import MeanPoolHead
from .recurrent import GRUHead, LSTMHead, RecurrentHead
from .tcn import TCNHead
from .transformer import TransformerHead
from .vote import FrameVote

__all__ = ["ConvLSTMHead", "FrameVote", "GRUHead", "LSTMHead", "MeanPoolHead", "RecurrentHead", "TCNHead",
           "TransformerHead"]
