"""The engines' dtype choice: float32 on CPUs without native bf16, the checkpoint's dtype
where the CPU (or a GPU) has it, an explicit dtype always."""

from __future__ import annotations

import json

import pytest

from ttc.engines.dtype import checkpoint_dtype, cpu_has_native_bf16, resolve_dtype

AVX2_EPYC = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2".split()
SAPPHIRE_RAPIDS = AVX2_EPYC + "avx512f avx512bw avx512_bf16 amx_bf16 amx_tile".split()
ZEN4 = AVX2_EPYC + "avx512f avx512bw avx512_bf16".split()
NEOVERSE_V1 = "fp asimd sve bf16 i8mm".split()


@pytest.fixture
def bf16_checkpoint(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "native"),
    [(AVX2_EPYC, False), (SAPPHIRE_RAPIDS, True), (ZEN4, True), (NEOVERSE_V1, True), ("avx512f avx512bw".split(), False)],
)
def test_native_bf16_from_cpu_flags(flags, native):  # type: ignore[no-untyped-def]
    assert cpu_has_native_bf16(flags) is native


def test_auto_picks_float32_on_a_cpu_without_bf16_units(bf16_checkpoint):  # type: ignore[no-untyped-def]
    native = cpu_has_native_bf16(AVX2_EPYC)
    assert resolve_dtype("auto", model=bf16_checkpoint, on_cpu=True, native_bf16=native) == "float32"


def test_auto_keeps_the_checkpoint_dtype_where_the_cpu_has_bf16(bf16_checkpoint):  # type: ignore[no-untyped-def]
    native = cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    assert resolve_dtype("auto", model=bf16_checkpoint, on_cpu=True, native_bf16=native) == "auto"


def test_auto_keeps_the_checkpoint_dtype_on_gpu(bf16_checkpoint):  # type: ignore[no-untyped-def]
    assert resolve_dtype("auto", model=bf16_checkpoint, on_cpu=False, native_bf16=False) == "auto"


def test_a_float32_checkpoint_stays_as_it_is(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert checkpoint_dtype(tmp_path) == "float32"
    assert resolve_dtype("auto", model=tmp_path, on_cpu=True, native_bf16=False) == "auto"


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize(("given", "chosen"), [("bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("float32", "float32"),
                                               ("FP16", "float16")])
def test_an_explicit_dtype_wins(bf16_checkpoint, native, given, chosen):  # type: ignore[no-untyped-def]
    assert resolve_dtype(given, model=bf16_checkpoint, on_cpu=True, native_bf16=native) == chosen


@pytest.mark.parametrize(("bad", "error"), [("int8", ValueError), ("", ValueError), (32, TypeError)])
def test_a_bad_dtype_is_named(bf16_checkpoint, bad, error):  # type: ignore[no-untyped-def]
    with pytest.raises(error, match="dtype"):
        resolve_dtype(bad, model=bf16_checkpoint, on_cpu=True)
