"""The machine: what a measurement was made on (timings from different CPUs are not comparable), which device
computes (chosen on purpose: `train.device`, CONTRASTLAB_DEVICE) and which CPU kernels torch computes with."""

from __future__ import annotations

import os
import platform
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from contrastlab.infra.errors import ParamError
from contrastlab.infra.params import DEVICE_CHOICES, DEVICE_PATTERN

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


DEVICE_ENV = "CONTRASTLAB_DEVICE"  # what `auto` means on this machine (e.g. `cpu` to keep a GPU free)
SLOW_BF16_ENV = "CONTRASTLAB_ALLOW_SLOW_BF16"  # 1: train in bf16 on a CPU that emulates it, knowingly
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def nvidia_driver(version_file: Path = NVIDIA_DRIVER) -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. "550.54.15"), or None where no NVIDIA driver is loaded."""
    try:
        text = version_file.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for [\w-]+)?\s+([\d.]+)", text)
    return found[1] if found else "unknown version"


def cuda_unusable_reason() -> str:
    """Why torch sees no CUDA device, in torch's own words where it gives any (a driver too old for its CUDA)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.is_available()
    said = next((str(w.message).splitlines()[0] for w in caught if "CUDA" in str(w.message)), "")
    built = (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"
        if torch.version.cuda
        else (f"torch {torch.__version__} is built without CUDA")
    )
    return f"{built}{f': {said}' if said else ''}"


def pick_device(setting: str = "auto", environ: Mapping[str, str] = os.environ) -> torch.device:
    """The device `setting` names (`DEVICE_CHOICES`), checked to be there: a missing one is a ParamError in one line.
    `auto` is CONTRASTLAB_DEVICE where set, else the first CUDA GPU, else Apple's MPS, else the CPU; where an NVIDIA
    driver is loaded but torch cannot use it, `auto` warns why before it falls back to the CPU."""
    source = "params.yaml: train.device"
    if setting == "auto" and environ.get(DEVICE_ENV, "auto") != "auto":
        setting, source = environ[DEVICE_ENV], DEVICE_ENV
    if not DEVICE_PATTERN.fullmatch(setting):
        raise ParamError(f"{source}={setting!r}: expected one of {DEVICE_CHOICES}")
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        if (driver := nvidia_driver()) is not None:
            warnings.warn(
                f"an NVIDIA GPU (driver {driver}) is present but unusable: {cuda_unusable_reason()}; computing on "
                f"the CPU (set {DEVICE_ENV}=cpu to say so and silence this)",
                stacklevel=2,
            )
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParamError(
                f"{source}={setting}: torch sees no CUDA device ({cuda_unusable_reason()}); use auto or cpu"
            )
        index, count = int(setting.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ParamError(
                f"{source}={setting}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})"
            )
        return torch.device("cuda", index)
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ParamError(f"{source}=mps: torch sees no Apple MPS device here; use auto or cpu")
    return torch.device(setting)


def check_precision(precision: str, device: torch.device, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, in one line and before training, a precision this device cannot run well: fp16 (with its gradient
    scaler) anywhere but CUDA, and bf16 on a CPU that emulates it (~20x slower than fp32) unless
    CONTRASTLAB_ALLOW_SLOW_BF16=1."""
    if precision == "fp16" and device.type != "cuda":
        raise ParamError(
            f"params.yaml: train.precision=fp16 runs on CUDA GPUs only, and this training runs on {device.type}; "
            "use fp32 (or bf16 where the CPU has native bf16)"
        )
    if precision == "bf16" and device.type == "cpu" and not has_native_bf16() and environ.get(SLOW_BF16_ENV) != "1":
        raise ParamError(
            "params.yaml: train.precision=bf16 on a CPU without native bf16 (no AVX512-BF16, no AMX) trains ~20x "
            f"slower than fp32: use train.precision=fp32 (or set {SLOW_BF16_ENV}=1 to train in bf16 anyway)"
        )


def device_record(device: torch.device) -> dict:
    """What a run records about its device: its name, and on CUDA the GPU, driver and CUDA version."""
    if device.type != "cuda":
        return {"device": device.type}
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device),
        "gpu_driver": nvidia_driver() or "unknown",
        "cuda": torch.version.cuda,
    }


def machine_description() -> str:
    """`cpu_description`, and the GPU torch would pick where there is one (a study's timings name both)."""
    gpu = f"; {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return cpu_description() + gpu


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
