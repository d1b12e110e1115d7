"""CPU inference speed-ups must not change a number: fused oneDNN convolutions against the model
they replace, and the process settings of ``harx.runtime``."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from conftest import BF16, REPO, needs_cpu_bf16
from harx.extract.fusion import FusedConv2d, available, fuse_convolutions

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN")


def _random_bn_stats(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
    return model.eval()


def _folded(name: str, size: tuple[int, int], random_stats: bool) -> nn.Module:
    import timm

    from harx.extract.backbones import fold_batchnorm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    model, _ = fold_batchnorm(_random_bn_stats(model) if random_stats else model, size)
    return model.to(memory_format=torch.channels_last)


MODELS = ["tf_efficientnet_lite0", "resnet18", "mobilenetv3_small_100", "efficientnet_b0"]
SIZES = [(64, 64), (65, 71)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", SIZES)
def test_fused_model_gives_the_same_embedding(name, size):
    """ReLU6 + TF "same" padding (lite0), ReLU and in-place residual adds (resnet), hardswish
    (mobilenetv3), SiLU (b0); even and odd input sizes, so "same" padding is asymmetric on either
    side. Random BatchNorm statistics, so the folded weights are not trivial."""
    model = _folded(name, size, random_stats=True)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=torch.channels_last)

    fused, n_fused = fuse_convolutions(model, (3, 3, *size), None)
    assert n_fused > 0 and fused is not model
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == n_convs
    with torch.inference_mode():
        a, b = model(x), fused(x)
    # other kernels, other summation order: last-bit differences, grown by 16 blocks of random BN stats
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99999
    assert torch.allclose(a, b, rtol=2e-2, atol=1e-4 * float(a.abs().max()))
    with torch.inference_mode():
        other_batch = fused(x[:2])  # weights are laid out for batch 3; other batches still work
    assert torch.allclose(other_batch, b[:2], rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@needs_cpu_bf16
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", SIZES)
def test_fused_bf16_model_is_as_close_to_fp32_as_autocast(name, size):
    """Under bf16 autocast the fused model is no further from the fp32 output than the unfused
    one. (Default BatchNorm statistics: with random ones these nets amplify bf16 rounding into
    cosines of 0.98 either way, which says nothing about fusion.)"""
    model = _folded(name, size, random_stats=False)
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=torch.channels_last)
    fused16, n16 = fuse_convolutions(model, (3, 3, *size), torch.bfloat16)
    assert n16 > 0
    with torch.inference_mode():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain16, fused_out = model(x).float(), fused16(x).float()
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(fused_out, exact).min() >= cosine(plain16, exact).min() - 1e-4


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (5, 2, 1), (3, 1, 1), (4, 2, 1), (3, 2, 2)])
@pytest.mark.parametrize("hw", [(14, 14), (15, 15), (14, 17)])
def test_same_padding_without_a_padded_copy(kernel, stride, dilation, hw):
    """Asymmetric "same" padding becomes a kernel one larger with symmetric padding: same sums."""
    from timm.layers import Conv2dSame

    conv = Conv2dSame(6, 6, kernel, stride=stride, dilation=dilation, groups=3).eval()
    x = torch.randn(2, 6, *hw, generator=torch.Generator().manual_seed(0))
    try:
        fused = FusedConv2d(conv, None, torch.float32, x.shape)
    except ValueError:
        assert dilation > 1  # only dilated kernels may be left as they are
        return
    with torch.inference_mode():
        assert torch.allclose(fused(x), conv(x), atol=1e-5)


class _ReusedConvOutput(nn.Module):
    """The conv's output feeds its ReLU and, unactivated, the sum: fusing would change the result."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return (self.act(y) + y).mean((2, 3))


def test_fusion_that_would_change_the_output_is_refused():
    model = _ReusedConvOutput().eval()
    fused, n = fuse_convolutions(model, (2, 3, 8, 8), None)
    assert fused is model and n == 0


@pytest.mark.parametrize("precision", ["fp32", BF16])
def test_cpu_backbone_is_fused_and_keeps_the_unfused_embedding(precision, monkeypatch):
    """The default backbone as harx builds it (stem kept in fp32 under bf16): same embeddings."""
    import numpy as np

    import harx.extract.backbones as backbones

    frames = np.random.default_rng(0).integers(0, 256, (4, 120, 160, 3), dtype=np.uint8)
    fused = backbones.create_backbone(precision=precision, device="cpu")
    monkeypatch.setattr(backbones, "fuse_convolutions", lambda model, shape, dtype: (model, 0))
    plain = backbones.create_backbone(precision=precision, device="cpu")
    assert fused.fused_activations > 0 and plain.fused_activations == 0
    a, b = fused.embed(frames), plain.embed(frames)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9999
    if precision == "fp32":
        assert np.abs(a - b).max() < 1e-4 * np.abs(b).max()


# ----------------------------------------------------------------------------- harx.runtime

@pytest.mark.parametrize("others,cores,max_threads,want", [
    (0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.6, 2, 2, 1), (1.0, 2, 2, 1), (1.9, 2, 2, 1),
    (0.0, 16, 8, 8), (9.2, 16, 16, 7), (20.0, 16, 16, 1), (0.0, 2, 1, 1)])
def test_threads_for_leaves_the_cores_others_take(others, cores, max_threads, want):
    from harx.runtime import threads_for

    assert threads_for(others, cores, max_threads) == want


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2
                    or torch.get_num_threads() < 2, reason="needs Linux /proc/stat and two cores")
def test_busy_neighbour_takes_a_thread_and_exit_gives_it_back():
    from harx.runtime import CpuThreads

    start = torch.get_num_threads()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        time.sleep(0.3)
        with CpuThreads(interval_s=0.5) as threads:
            time.sleep(0.7)
            assert threads.update() == start - 1 == torch.get_num_threads()
        assert torch.get_num_threads() == start
    finally:
        spinner.kill()
        spinner.wait()


def test_malloc_tuning_is_applied_on_glibc_and_can_be_declined():
    code = "from harx.runtime import keep_freed_memory; print(keep_freed_memory())"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("HARX_MALLOC_TUNING", None)
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env=dict(env, HARX_MALLOC_TUNING="0"),
                         capture_output=True, text=True, check=True)
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    assert on.stdout.strip() == str(glibc)
    assert off.stdout.strip() == "False"


@pytest.mark.parametrize("precision", ["fp32", BF16])
def test_thread_count_does_not_change_an_embedding(precision):
    """The governor may change torch's thread count mid-run; a cache must not depend on it."""
    import numpy as np

    from harx.extract.backbones import create_backbone

    frames = np.random.default_rng(1).integers(0, 256, (5, 120, 160, 3), dtype=np.uint8)
    backbone = create_backbone(precision=precision, device="cpu")
    start = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = backbone.embed(frames)
        torch.set_num_threads(max(2, start))
        two = backbone.embed(frames)
    finally:
        torch.set_num_threads(start)
    assert np.array_equal(one.astype(np.float16), two.astype(np.float16))


@pytest.mark.parametrize("files,want", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "50000 100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({}, None)])
def test_container_cpu_quota_is_read_from_cgroup_v1_and_v2(tmp_path, files, want):
    from harx.runtime import cgroup_cpu_limit

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(str(tmp_path)) == want


def test_threads_are_capped_at_the_container_quota(monkeypatch):
    import harx.runtime as runtime

    start = torch.get_num_threads()
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: 0.5)
    with runtime.CpuThreads() as threads:
        assert threads.max_threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == start
