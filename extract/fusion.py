"""Convolutions as single oneDNN calls for CPU inference: activation fused in, weights pre-cast
and pre-packed, TF "same" padding without a padded copy.

Profiling lite0 on a CPU after BatchNorm folding showed much of the time around the convolutions
rather than in them: ReLU6 as a separate pass over every activation map (bf16 element-wise
kernels are slower than fp32 ones), ``Conv2dSame``'s explicit padding (a zero-filled copy of the
activation map before every strided conv), and autocast re-casting every weight on every call
(the profile and the speed-up are in ``benchmarks/RESULTS.md``). :func:`fuse_convolutions` replaces each
``nn.Conv2d`` by a :class:`FusedConv2d` that calls ``torch.ops.mkldnn._convolution_pointwise``
(the op ``torch.compile`` emits for the same pattern on a CPU) with

* the activation that directly consumes the conv's output as oneDNN post-op (ReLU, ReLU6 and
  Hardtanh, SiLU, Hardswish, GELU, Sigmoid, Tanh, LeakyReLU, Hardsigmoid);
* weights cast once to the dtype the conv computes in under autocast, and re-laid out once for
  the input shape it sees;
* asymmetric "same" padding, which ``Conv2d`` cannot express, turned into symmetric padding by
  growing the kernel by one zero row/column on the side that pads less: the same sums, no copy.

Outputs are identical to the unfused model's in fp32 and bf16 on lite0. Pairs are found by running the model once and matching tensors, as
:func:`~extract.backbones.fold_batchnorm` does, so any timm CNN qualifies; the fused model is
checked against the original on a probe and dropped if they disagree (say a conv output that is
also used before its activation), as it is when this torch build has no oneDNN.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F


def _post_op(act: nn.Module) -> tuple[str, list, str] | None:
    """oneDNN post-op name, scalars and algorithm for an activation module, or None."""
    if isinstance(act, nn.ReLU6):
        return "hardtanh", [0.0, 6.0], ""
    if isinstance(act, nn.Hardtanh):
        return "hardtanh", [float(act.min_val), float(act.max_val)], ""
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [float(act.negative_slope)], ""
    if isinstance(act, nn.GELU):
        return "gelu", [], act.approximate
    simple = {nn.ReLU: "relu", nn.SiLU: "swish", nn.Hardswish: "hardswish", nn.Sigmoid: "sigmoid",
              nn.Tanh: "tanh", nn.Hardsigmoid: "hardsigmoid"}
    name = simple.get(type(act))
    return (name, [], "") if name else None


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one dimension, as timm's ``pad_same`` pads."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class FusedConv2d(nn.Module):
    """A conv (and the activation after it) as one oneDNN call; see the module docstring."""

    def __init__(self, conv: nn.Conv2d, post_op: tuple[str, list, str] | None, dtype: torch.dtype,
                 input_shape: torch.Size):
        super().__init__()
        self.attr, self.scalars, self.algorithm = post_op or ("none", [], "")
        self.dtype = dtype
        self.stride, self.dilation, self.groups = list(conv.stride), list(conv.dilation), conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding mode {conv.padding_mode!r}")
        weight = conv.weight.detach().to(dtype)
        if conv.padding == "valid":
            padding = [0, 0]
        elif not _is_dynamic_same(conv):
            padding = list(conv.padding)
        else:  # timm's Conv2dSame (pads in forward), or padding="same"
            padding = []
            for dim, size in enumerate(input_shape[-2:]):
                before, after = _same_padding(size, conv.kernel_size[dim], self.stride[dim], self.dilation[dim])
                if after == before + 1 and self.dilation[dim] == 1:
                    shape = list(weight.shape)
                    shape[2 + dim] = 1
                    weight = torch.cat([weight.new_zeros(shape), weight], dim=2 + dim)
                    before = after
                if before != after:
                    raise ValueError("padding not expressible symmetrically")
                padding.append(before)
        self.padding = padding
        self.input_hw = tuple(input_shape[-2:])
        weight = weight.contiguous(memory_format=torch.channels_last)
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(
            weight, padding, self.stride, self.dilation, self.groups, list(input_shape))
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_hw:
            raise RuntimeError(f"FusedConv2d planned for {self.input_hw}, got {tuple(x.shape[-2:])}")
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(self.dtype), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, self.algorithm)

    def extra_repr(self) -> str:
        return f"{self.attr}, stride={self.stride}, padding={self.padding}, groups={self.groups}, {self.dtype}"


def _is_dynamic_same(conv: nn.Conv2d) -> bool:
    return type(conv).__name__ == "Conv2dSame" or conv.padding == "same"


def available() -> bool:
    """Whether this torch build has the oneDNN ops (CPU builds with MKLDNN, which pip wheels are)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"))


def fuse_convolutions(model: nn.Module, input_shape: tuple[int, int, int, int],
                      autocast_dtype: torch.dtype | None) -> tuple[nn.Module, int]:
    """A copy of CPU ``model`` with every ``nn.Conv2d`` replaced by a :class:`FusedConv2d`, and
    how many activations were fused into them; ``(model, 0)`` unchanged when the ops are missing
    or the fused copy does not reproduce the model on a probe of ``input_shape`` (N, C, H, W).

    ``autocast_dtype`` is the autocast dtype the model will run under (``None``: fp32). Each conv
    keeps the dtype it computes in there (a stem kept in fp32 stays fp32).
    """
    if not available() or autocast_dtype not in (None, torch.bfloat16):
        return model, 0
    autocast = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None else nullcontext())
    fused = copy.deepcopy(model).eval()
    convs: dict[int, tuple[nn.Conv2d, torch.Size, torch.dtype]] = {}
    producer: dict[int, tuple[nn.Conv2d, int]] = {}  # id(output) -> (conv, output's version)
    consumers: list[tuple[nn.Module, torch.Tensor, int]] = []
    keep_alive: list[torch.Tensor] = []  # so ids stay unique while matching

    def on_conv(module, inputs, output):
        convs[id(module)] = (module, inputs[0].shape, output.dtype)
        producer[id(output)] = (module, output._version)
        keep_alive.append(output)

    def on_act(module, inputs):
        if inputs:
            consumers.append((module, inputs[0], inputs[0]._version))

    hooks = [m.register_forward_hook(on_conv) if isinstance(m, nn.Conv2d) else m.register_forward_pre_hook(on_act)
             for m in fused.modules() if isinstance(m, nn.Conv2d) or _post_op(m) is not None]
    probe = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    probe = probe.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        exact = model(probe).float()
        if autocast_dtype is None:
            reference = exact  # fp32: the model's own output is the reference; no second pass
        else:
            with autocast:
                reference = model(probe).float()
    try:  # no_grad, not inference_mode: version counters tell an output changed in place (x += skip)
        with torch.no_grad(), autocast:
            fused(probe)
    finally:
        for h in hooks:
            h.remove()
    post_ops = {}
    for act, tensor, version in consumers:
        conv, conv_version = producer.get(id(tensor), (None, None))
        if conv is not None and version == conv_version and id(conv) not in post_ops:
            post_ops[id(conv)] = act
    keep_alive.clear()
    consumers.clear()
    replace: dict[int, nn.Module] = {}
    with torch.inference_mode():
        for key, (conv, shape, dtype) in convs.items():
            act = post_ops.get(key)
            try:
                replace[key] = FusedConv2d(conv, _post_op(act) if act is not None else None, dtype, shape)
            except (RuntimeError, ValueError, TypeError):
                continue  # this conv stays as it is (say reflect padding)
            if act is not None:
                replace[id(act)] = nn.Identity()
    for module in list(fused.modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in replace:
                setattr(module, child_name, replace[id(child)])
    try:
        with torch.inference_mode(), autocast:
            out = fused(probe).float()
    except RuntimeError:
        return model, 0
    if not _agrees(out, reference, exact, autocast_dtype):
        return model, 0
    return fused, sum(1 for m in fused.modules() if isinstance(m, FusedConv2d) and m.attr != "none")


def _agrees(out: torch.Tensor, reference: torch.Tensor, exact: torch.Tensor,
            autocast_dtype: torch.dtype | None) -> bool:
    """fp32: the fused output is the model's up to summation order (every row's cosine
    >= 0.99999; on lite0 they are identical). bf16: it is no further from the model's fp32 output
    than the unfused bf16 one is (the fused op applies the activation before rounding to bf16, so
    it is often a little closer; on lite0 the two are identical)."""
    if out.shape != reference.shape or not torch.isfinite(out).all():
        return False

    def cosine(a: torch.Tensor) -> float:
        return float(F.cosine_similarity(a.flatten(1), exact.flatten(1), dim=1).min())

    if autocast_dtype is None:
        return cosine(out) >= 0.99999
    return cosine(out) >= cosine(reference) - 1e-3
