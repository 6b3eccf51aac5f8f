"""The machine description that study runs and benchmarks record, from a hand-written /proc/cpuinfo, and the
portable kernels, each case in a fresh process (a library reads its kernel setting once)."""

import os
import platform
import re
import subprocess
import sys

import pytest
import torch
import torch._inductor.cpp_builder

from contrastlab.infra.errors import ParamError
from contrastlab.infra.machine import PORTABLE_KERNELS, cpp_compiler, cpu_description, has_native_bf16, use_cpu_kernels
from project import ROOT

ZEN5 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512bw\n"
AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n"


def test_description_names_model_threads_and_the_simd_flags_that_set_the_rates(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(ZEN5)
    for threads, said in ((2, "2 threads"), (1, "1 thread")):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        expected = f"AMD EPYC, {said}, {platform.machine()}, avx2 fma avx512f avx512_bf16"
        assert cpu_description(tmp_path / "cpuinfo") == expected


def test_native_bf16_needs_avx512_bf16_or_amx(tmp_path):
    (tmp_path / "zen5").write_text(ZEN5)
    (tmp_path / "avx2").write_text(AVX2_ONLY)
    assert has_native_bf16(tmp_path / "zen5")
    assert not has_native_bf16(tmp_path / "avx2")


def test_an_unreadable_cpuinfo_gives_an_unknown_cpu(tmp_path):
    assert cpu_description(tmp_path / "missing").startswith("unknown CPU, ")
    assert not has_native_bf16(tmp_path / "missing")


def test_the_cpp_compiler_is_the_one_inductor_finds_or_none(monkeypatch):
    monkeypatch.setattr(torch._inductor.cpp_builder, "get_cpp_compiler", lambda: "/opt/bin/g++-14")
    assert cpp_compiler() == "/opt/bin/g++-14"

    def no_compiler():
        raise torch._inductor.exc.InvalidCxxCompiler()

    monkeypatch.setattr(torch._inductor.cpp_builder, "get_cpp_compiler", no_compiler)
    assert cpp_compiler() is None


def kernels_in_a_fresh_process(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` in a new Python (its libraries read their kernel caps once, so each case needs its own process),
    with oneDNN saying which instruction set its convolutions run."""
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, "ONEDNN_VERBOSE": "1", **env}
    )


CONVOLVE = "torch.nn.Conv2d(1, 4, 3)(torch.ones(2, 1, 8, 8))"  # a batch of 1 would skip oneDNN
MULTIPLY = "torch.ones(64, 64) @ torch.ones(64, 64)"  # an MKL matrix product


@pytest.fixture(scope="module")
def native() -> str:
    """The ATen kernels this CPU runs when nothing caps them (asked once, in a fresh process, not at import)."""
    return kernels_in_a_fresh_process("import torch; print(torch.backends.cpu.get_cpu_capability())").stdout.split()[-1]


x86_64 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="caps x86-64 kernels")


@x86_64
def test_portable_kernels_run_avx2s_convolutions_and_vector_kernels_and_mkls_compatible_mode():
    run = kernels_in_a_fresh_process(
        "import torch; from contrastlab.infra.machine import use_cpu_kernels; use_cpu_kernels('portable'); "
        f"{CONVOLVE}; {MULTIPLY}; print(torch.backends.cpu.get_cpu_capability())",
        MKL_VERBOSE="1",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "AVX2"
    assert "onednn_verbose,v1,info,cpu,isa:Intel AVX2\n" in run.stdout
    assert "CNR:COMPATIBLE" in run.stdout  # MKL's conditional numerical reproducibility mode


def test_native_kernels_leave_the_environment_as_it_is(native):
    run = kernels_in_a_fresh_process(
        "import os, torch; from contrastlab.infra.machine import use_cpu_kernels; use_cpu_kernels('native'); "
        "print(torch.backends.cpu.get_cpu_capability(), 'MKL_CBWR' in os.environ)"
    )
    assert run.stdout.splitlines()[-1] == f"{native} False"


@x86_64
def test_portable_kernels_asked_for_after_torch_computed_stop_with_an_error(native):
    if native == "AVX2":
        pytest.skip("this CPU's own kernels are AVX2's: nothing to catch")
    run = kernels_in_a_fresh_process(
        f"import torch; from contrastlab.infra.machine import use_cpu_kernels; {CONVOLVE}; use_cpu_kernels('portable')"
    )
    assert f"RuntimeError: torch computed before use_cpu_kernels: its kernels are already {native}" in run.stderr


def test_portable_kernels_on_another_architecture_are_a_param_error(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ParamError, match="cpu_kernels='portable' pins x86-64 kernels, and this machine is aarch64"):
        use_cpu_kernels("portable")


def test_make_test_avx2_runs_the_cpu_sensitive_tests_on_the_portable_kernels():
    makefile = (ROOT / "Makefile").read_text()
    caps = re.search(r"^AVX2_KERNELS = (.*?)\n(?=\S)", makefile, re.MULTILINE | re.DOTALL)[1]
    assert {f"{name}={value}" for name, value in PORTABLE_KERNELS.items()} <= set(caps.split())
    assert "$(AVX2_KERNELS) $(BIN)/python -m pytest -n auto --dist loadfile -m cpu_sensitive" in makefile
