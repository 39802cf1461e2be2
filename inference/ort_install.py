"""Which ONNX Runtime build is installed, without importing it.

``pip install kanjian`` brings no ONNX Runtime: each target picks its one build with an
extra (``kanjian[cpu]``: ``onnxruntime``; ``kanjian[cuda]``: ``onnxruntime-gpu``;
``kanjian[jetson]``: none from PyPI, NVIDIA's JetPack wheel is installed beside it;
docs/deploy.md, "Install"). All of them install the same ``onnxruntime`` module, so
two of them in one environment overwrite each other's files and the last installed
wins, silently. This module names what is there and what to do; the modules that use
ONNX Runtime raise :func:`missing_onnxruntime`'s error when there is none, and
``kanjian doctor`` reports both cases.
"""

from __future__ import annotations

from importlib import metadata

#: the distributions that install the ``onnxruntime`` module (pip names)
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
)

#: what to install, per target (one line; the CLI prints it after ``error:``)
NO_ORT_MESSAGE = (
    "no ONNX Runtime installed: pip install 'kanjian[cpu]' (x86 CPU), 'kanjian[cuda]' "
    "(NVIDIA GPU) or use JetPack's onnxruntime-gpu on a Jetson (docs/deploy.md)"
)


def ort_distributions() -> dict[str, str]:
    """The installed distributions that provide the ``onnxruntime`` module, with their
    versions (two of them fight over one folder: the last installed wins)."""
    out = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def conflict_message(dists: dict[str, str]) -> str | None:
    """One line saying that several ONNX Runtime builds share the module, and the fix;
    ``None`` when there is at most one."""
    if len(dists) < 2:
        return None
    names = " ".join(dists)
    found = ", ".join(f"{k} {v}" for k, v in dists.items())
    return (
        f"{found} are installed together and overwrite one onnxruntime module (the last "
        f"installed wins): pip uninstall -y {names}, then install the one for this machine: "
        "pip install 'kanjian[cpu]' or 'kanjian[cuda]', or JetPack's onnxruntime-gpu"
    )


def missing_onnxruntime(cause: ModuleNotFoundError) -> ModuleNotFoundError:
    """The error to raise when ``import onnxruntime`` failed with ``cause``: its message
    says which extra installs it (``name`` stays ``onnxruntime``, so the CLI's missing-
    module handler turns it into one line). Another missing module is passed on as is."""
    if (cause.name or "").split(".")[0] != "onnxruntime":
        return cause
    return ModuleNotFoundError(NO_ORT_MESSAGE, name="onnxruntime")


__all__ = [
    "NO_ORT_MESSAGE",
    "ORT_DISTRIBUTIONS",
    "conflict_message",
    "missing_onnxruntime",
    "ort_distributions",
]
