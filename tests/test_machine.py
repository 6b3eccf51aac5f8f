"""The machine description that study runs and benchmarks record, from a hand-written /proc/cpuinfo."""

import platform

import torch

from contrastlab.machine import cpu_description, has_native_bf16

ZEN5 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512bw\n"
AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n"


def test_description_names_model_threads_and_the_simd_flags_that_set_the_rates(tmp_path):
    (tmp_path / "cpuinfo").write_text(ZEN5)
    threads = torch.get_num_threads()
    expected = f"AMD EPYC, {threads} threads, {platform.machine()}, avx2 fma avx512f avx512_bf16"
    assert cpu_description(tmp_path / "cpuinfo") == expected


def test_native_bf16_needs_avx512_bf16_or_amx(tmp_path):
    (tmp_path / "zen5").write_text(ZEN5)
    (tmp_path / "avx2").write_text(AVX2_ONLY)
    assert has_native_bf16(tmp_path / "zen5")
    assert not has_native_bf16(tmp_path / "avx2")


def test_an_unreadable_cpuinfo_gives_an_unknown_cpu(tmp_path):
    assert cpu_description(tmp_path / "missing").startswith("unknown CPU, ")
    assert not has_native_bf16(tmp_path / "missing")
