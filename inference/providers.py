"""Why an ONNX Runtime execution provider cannot run here, and what fixes it.

ONNX Runtime says little when a provider does not load: onnxruntime-gpu lists CUDA
and TensorRT on any machine, and a session asked for them quietly runs on the CPU
(its reason goes to stderr, if anywhere). :func:`diagnose_provider` finds the cause
without creating a session: is the provider in this build, does its shared library
load (the missing CUDA/cuDNN/TensorRT library is named by the loader), is there an
NVIDIA GPU at all. The station's refusal
(:class:`~kanjian.inference.session.ProviderUnavailableError`) and ``kanjian doctor``
both use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# importable without ONNX Runtime (``kanjian doctor`` reports a missing one); the
# functions that need it import it themselves
from kanjian.inference.ort_install import missing_onnxruntime, ort_distributions

#: the providers that need an NVIDIA GPU, and the name of their library in ORT's capi/
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}

#: how to get a provider that this ONNX Runtime build lacks
_BUILD_FIX = {
    "CUDAExecutionProvider": "install onnxruntime-gpu instead of onnxruntime (pip uninstall -y "
    "onnxruntime, then pip install 'kanjian[cuda]'; on a Jetson: NVIDIA's onnxruntime-gpu "
    "wheel for its JetPack)",
    "TensorrtExecutionProvider": "install onnxruntime-gpu instead of onnxruntime (pip uninstall "
    "-y onnxruntime, then pip install 'kanjian[cuda]'; on a Jetson: NVIDIA's onnxruntime-gpu "
    "wheel for its JetPack) and TensorRT",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino instead of onnxruntime",
}


@dataclass(frozen=True)
class ProviderDiagnosis:
    """What stops one provider, as far as can be told without a session.

    Attributes:
        provider: the ONNX Runtime provider name, e.g. ``CUDAExecutionProvider``.
        causes: each thing found missing, most specific first; empty when nothing is
            (ONNX Runtime's own error, printed to stderr, is then the cause).
        fix: what to do about the first cause, in one phrase.
        certain: a cause makes a session on it impossible (not in the build, its
            library does not load), so there is no point in trying one.
    """

    provider: str
    causes: tuple[str, ...]
    fix: str
    certain: bool = False

    @property
    def cause(self) -> str:
        """The causes as one phrase."""
        if not self.causes:
            return "ONNX Runtime could not create it (its own error is printed above)"
        return "; ".join(self.causes)


def _ort() -> Any:
    """The ``onnxruntime`` module; a missing one raises the error naming the extras."""
    try:
        import onnxruntime
    except ModuleNotFoundError as e:
        raise missing_onnxruntime(e) from None
    return onnxruntime


def jetson() -> bool:
    """Whether this is an NVIDIA Jetson (L4T): its GPU has no ``/dev/nvidia0``."""
    return Path("/etc/nv_tegra_release").exists() or Path("/dev/nvhost-ctrl-gpu").exists()


def nvidia_gpu_visible() -> bool:
    """An NVIDIA device node, driver or Jetson GPU is there (nothing is loaded)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists() or jetson()


def _library_error(kind: str) -> str | None:
    """The loader's message when ORT's provider library for ``kind`` cannot load.

    The shared provider bridge is loaded first (as ORT does), so that only a missing
    dependency (``libcublasLt.so.13: cannot open shared object file``) is reported.
    """
    capi = Path(_ort().__file__).parent / "capi"
    lib = next(iter(sorted(capi.glob(f"*onnxruntime_providers_{kind}.*"))), None)
    if lib is None:
        return f"ONNX Runtime's {kind} provider library is not in {capi}"
    shared = next(iter(sorted(capi.glob("*onnxruntime_providers_shared.*"))), None)
    try:
        if shared is not None:
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(lib))
    except OSError as e:
        text = str(e)
        # only a library that is not there is a cause worth naming; anything else
        # (a symbol the bridge resolves later) is ORT's to say
        if "cannot open shared object" in text or "not found" in text.lower():
            return f"{lib.name} cannot load: {text}"
    return None


def diagnose_provider(provider: str) -> ProviderDiagnosis:
    """Why ``provider`` (ONNX Runtime's name) may not run here, and the fix.

    Cheap (no session is made): build, provider library, TensorRT library, GPU.
    """
    available = _ort().get_available_providers()
    dists = ", ".join(f"{k} {v}" for k, v in ort_distributions().items()) or "onnxruntime"
    if provider not in available:
        fix = _BUILD_FIX.get(provider, f"install an ONNX Runtime build with {provider}")
        cause = f"not in this ONNX Runtime build ({dists}: {', '.join(available)})"
        return ProviderDiagnosis(provider, (cause,), fix, certain=True)
    kind = GPU_PROVIDERS.get(provider)
    if kind is None:
        return ProviderDiagnosis(provider, (), "see ONNX Runtime's error above")
    # (cause, fix), the most fundamental first: no GPU makes libraries moot
    found: list[tuple[str, str]] = []
    if not nvidia_gpu_visible():
        found.append(
            (
                "no NVIDIA GPU is visible (no /dev/nvidia0, not a Jetson)",
                "run on a machine with an NVIDIA GPU and its driver",
            )
        )
    lib_error = _library_error(kind)
    if lib_error is not None:
        found.append(
            (
                lib_error,
                f"install the CUDA and cuDNN libraries {dists} is built for "
                "(docs/deploy.md) and put them on the library path",
            )
        )
    if kind == "tensorrt" and ctypes.util.find_library("nvinfer") is None:
        found.append(
            (
                "the TensorRT library (libnvinfer) is not installed",
                "install the TensorRT version this onnxruntime-gpu is built for",
            )
        )
    causes = tuple(c for c, _ in found)
    fix = found[0][1] if found else "see ONNX Runtime's error above"
    return ProviderDiagnosis(provider, causes, fix, certain=lib_error is not None)


__all__ = [
    "GPU_PROVIDERS",
    "ProviderDiagnosis",
    "diagnose_provider",
    "jetson",
    "nvidia_gpu_visible",
    "ort_distributions",
]
