"""The machine: what a measurement was made on (timings from different CPUs are not comparable),
and which CPU kernels torch computes with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from contrastlab.infra.errors import ParamError

# The SIMD extensions that decide the fp32 and bf16 rates of PyTorch's CPU kernels.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    model, flags = "unknown CPU", set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Model, threads and SIMD flags, e.g. "AMD EPYC, 2 threads, x86_64, avx2 fma"."""
    model, flags = cpu_model_and_flags(cpuinfo)
    simd = [flag for flag in SIMD_FLAGS if flag in flags]
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'s' if threads != 1 else ''}, {platform.machine()}, {' '.join(simd) or 'no AVX'}"


def has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Without AVX512-BF16 or AMX, bf16 matmuls are emulated: about 100x slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_model_and_flags(cpuinfo)[1])


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would use (g++, or `CXX`), or None when it
    finds none: without one, compiling for the CPU fails at the first forward pass."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - Inductor's own search raises its own error types, and they change
        return None


# `cpu_kernels: portable`: kernels every x86-64 CPU from AVX2 up runs alike, so the same seed gives the same bytes
# on any of them. By default each library picks the widest its CPU offers, and they round differently: oneDNN's
# convolutions (AVX-512 or AVX2), ATen's vectorised kernels, and MKL's matrix products, which take one path on
# Intel CPUs and another on AMD ones; MKL_CBWR=COMPATIBLE (Intel's conditional bitwise reproducibility) is
# the one of its modes that gives the same bytes on both (measured: README, "Same seed, same numbers").
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}


def use_cpu_kernels(kernels: str) -> None:
    """Pin torch's CPU kernels for `portable` (`native` leaves the environment as it is). Each library reads
    its setting once, at its first computation, so this comes before any tensor is computed."""
    if kernels == "native":
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise ParamError(
            f"params.yaml: cpu_kernels='portable' pins x86-64 kernels, and this machine is "
            f"{platform.machine()}; use cpu_kernels=native"
        )
    os.environ.update(PORTABLE_KERNELS)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "DEFAULT":
        raise ParamError(
            "params.yaml: cpu_kernels='portable' runs AVX2's kernels, and this CPU has no AVX2; use cpu_kernels=native"
        )
    if capability != "AVX2":
        raise RuntimeError(f"torch computed before use_cpu_kernels: its kernels are already {capability}")
