"""The machine description that study runs and benchmarks record, from a hand-written /proc/cpuinfo; the portable
kernels, each case in a fresh process (a library reads its kernel setting once); the device and precision choices,
with torch's view of the GPUs replaced."""

import os
import platform
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torch._inductor.cpp_builder

from contrastlab.infra import machine
from contrastlab.infra.errors import ParamError
from contrastlab.infra.machine import (
    DEVICE_ENV,
    PORTABLE_KERNELS,
    SLOW_BF16_ENV,
    check_precision,
    cpp_compiler,
    cpu_description,
    device_record,
    has_native_bf16,
    nvidia_driver,
    pick_device,
    use_cpu_kernels,
)
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


def test_auto_is_contrastlab_device_where_set_else_cuda_else_mps_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(machine, "nvidia_driver", lambda: None)
    assert pick_device("auto", environ={}) == torch.device("cpu")
    assert pick_device("auto", environ={DEVICE_ENV: "auto"}) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto", environ={}) == torch.device("mps")
    assert pick_device("auto", environ={DEVICE_ENV: "cpu"}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", environ={}) == torch.device("cuda:0")
    assert pick_device("cuda:1", environ={DEVICE_ENV: "cpu"}) == torch.device("cuda:1")  # a named device wins


@pytest.mark.parametrize(
    "setting, environ, said",
    [
        ("tpu", {}, "params.yaml: train.device='tpu': expected one of auto, cpu, cuda, cuda:N or mps"),
        ("auto", {DEVICE_ENV: "gpu"}, "CONTRASTLAB_DEVICE='gpu': expected one of auto, cpu, cuda, cuda:N or mps"),
        ("cuda", {}, "params.yaml: train.device=cuda: torch sees no CUDA device (torch "),
        ("auto", {DEVICE_ENV: "cuda:0"}, "CONTRASTLAB_DEVICE=cuda:0: torch sees no CUDA device (torch "),
        ("mps", {}, "params.yaml: train.device=mps: torch sees no Apple MPS device here; use auto or cpu"),
    ],
)
def test_a_device_that_is_not_there_is_refused_in_one_line(monkeypatch, setting, environ, said):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ParamError) as refused:
        pick_device(setting, environ=environ)
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)


def test_a_cuda_index_beyond_the_machines_gpus_names_how_many_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for count, said in ((1, "1 CUDA device (cuda:0)"), (4, "4 CUDA devices (cuda:0 to cuda:3)")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        with pytest.raises(ParamError, match=re.escape(f"params.yaml: train.device=cuda:4: this machine has {said}")):
            pick_device("cuda:4", environ={})


def test_auto_says_why_an_nvidia_gpu_that_torch_cannot_use_is_left_idle(monkeypatch, tmp_path):
    (tmp_path / "version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 UTC 2021\nGCC version: gcc 9\n"
    )
    assert nvidia_driver(tmp_path / "version") == "470.57.02"
    assert nvidia_driver(tmp_path / "missing") is None

    def too_old():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).", stacklevel=2
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", too_old)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(machine, "nvidia_driver", lambda: "470.57.02")
    with pytest.warns(UserWarning) as said:
        assert pick_device("auto", environ={}) == torch.device("cpu")
    message = str(said[-1].message)
    assert message.startswith("an NVIDIA GPU (driver 470.57.02) is present but unusable: torch ")
    assert "The NVIDIA driver on your system is too old (found version 11040)." in message
    assert message.endswith("computing on the CPU (set CONTRASTLAB_DEVICE=cpu to say so and silence this)")


def test_bf16_on_a_cpu_that_emulates_it_is_refused_unless_the_user_insists(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(machine, "has_native_bf16", lambda: False)
    with pytest.raises(
        ParamError, match=r"^params.yaml: train.precision=bf16 on a CPU without native bf16 .* use train.precision=fp32"
    ):
        check_precision("bf16", cpu, environ={})
    check_precision("bf16", cpu, environ={SLOW_BF16_ENV: "1"})
    check_precision("bf16", cuda, environ={})
    check_precision("fp32", cpu, environ={})
    monkeypatch.setattr(machine, "has_native_bf16", lambda: True)
    check_precision("bf16", cpu, environ={})
    check_precision("fp16", cuda, environ={})
    with pytest.raises(
        ParamError, match=r"^params.yaml: train.precision=fp16 runs on CUDA GPUs only, and this training runs on mps"
    ):
        check_precision("fp16", torch.device("mps"), environ={})


def test_a_run_records_its_gpu_by_name_driver_and_cuda_version(monkeypatch):
    assert device_record(torch.device("cpu")) == {"device": "cpu"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(machine, "nvidia_driver", lambda: "550.54.15")
    assert device_record(torch.device("cuda", 0)) == {
        "device": "cuda:0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_driver": "550.54.15",
        "cuda": torch.version.cuda,
    }
