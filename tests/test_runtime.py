"""Device and precision resolution (harx.runtime): right on AVX2-only, AVX512-BF16 and AMX CPUs."""

from __future__ import annotations

import pytest
import torch

import harx.runtime as runtime
from harx.features.errors import InvalidOptionError

CPU = torch.device("cpu")


@pytest.fixture
def avx2_only(monkeypatch):
    """This CPU as an AVX2-only machine: oneDNN has no bf16 at all."""
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: (False, False))


def test_auto_precision_on_an_avx2_cpu_is_fp32(avx2_only):
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    assert runtime.resolve_precision(None, CPU) == "fp32"


def test_bf16_on_an_avx2_cpu_is_one_clear_error(avx2_only):
    with pytest.raises(InvalidOptionError, match="no bf16 support.*--precision fp32"):
        runtime.resolve_precision("bf16", CPU)


def test_emulated_bf16_is_allowed_but_not_chosen(monkeypatch):
    """AVX512BW without BF16 instructions: oneDNN emulates bf16, slower than fp32."""
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: (False, True))
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    assert runtime.resolve_precision("bf16", CPU) == "bf16"


def test_native_bf16_is_the_cpu_default(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: (True, True))
    assert runtime.resolve_precision("auto", CPU) == "bf16"


def test_training_stays_fp32_on_every_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: (True, True))
    for spec in ("auto", "bf16", "fp32", "fp16"):
        assert runtime.resolve_precision(spec, CPU, cpu_half=False) == "fp32"


def test_cpu_bf16_reads_the_instruction_sets(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert runtime.cpu_bf16()[0] is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.cpu_bf16()[0] is runtime.cpu_bf16()[1]


def test_unknown_precision_and_device_are_one_line():
    with pytest.raises(InvalidOptionError, match="unknown precision 'fp8'"):
        runtime.resolve_precision("fp8", CPU)
    with pytest.raises(InvalidOptionError, match="unknown device"):
        runtime.resolve_device("tpu:x")


def test_default_backbone_on_an_avx2_cpu_runs_fused_fp32(avx2_only):
    """The product path of an AVX2 machine: auto precision, fused fp32 convolutions, finite output."""
    import numpy as np

    from harx.extract.backbones import create_backbone

    backbone = create_backbone(device="cpu", precision="auto")
    assert backbone.precision == "fp32"
    assert backbone.fused_activations > 0
    emb = backbone.embed(np.random.default_rng(0).integers(0, 256, (3, 120, 160, 3), dtype=np.uint8))
    assert emb.shape == (3, backbone.embed_dim) and np.isfinite(emb).all()


@pytest.mark.parametrize("cap,native,supported", [("AVX2", False, False), ("avx512_core", False, True),
                                                  ("AVX512_CORE_BF16", None, None), ("ALL", None, None)])
def test_onednn_isa_cap_is_honoured(monkeypatch, cap, native, supported):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    free = runtime.cpu_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    capped = runtime.cpu_bf16()
    expect = (free[0] if native is None else native and free[0], free[1] if supported is None else supported and free[1])
    assert capped == expect
