"""ONNX Runtime sessions: execution-provider choice, and saying what really runs.

onnxruntime-gpu lists TensorRT and CUDA even on a machine without a GPU; asking
for them there logs an error and quietly runs on the CPU. We therefore compare
what was asked for with ``session.get_providers()``: when the first provider asked
for does not run, the session is refused (:class:`ProviderUnavailableError`, naming
the cause and the fix) unless a fallback is allowed; an allowed one is reported
loudly (log warning + :attr:`SessionInfo.fell_back`, shown in ``/status``, the
metrics, the screen and a platform event). ``auto`` never refuses: it asks for the
best there is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanjian.inference.ort_install import missing_onnxruntime
from kanjian.inference.providers import GPU_PROVIDERS, ProviderDiagnosis, diagnose_provider

try:
    import onnxruntime as ort
except ModuleNotFoundError as e:  # the base install has none: an extra brings one
    raise missing_onnxruntime(e) from None

log = logging.getLogger(__name__)

#: short names accepted in config, mapped to ONNX Runtime provider names
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


class ModelLoadError(Exception):
    """The model file is missing, unreadable or not a valid ONNX model."""


class ProviderUnavailableError(ModelLoadError):
    """The first execution provider asked for does not run the model and no fallback is
    allowed. Its text is one line: the provider, the cause, the fix.

    Attributes:
        model: the ONNX file.
        requested: the provider asked for first (ONNX Runtime's name).
        instead: what would run instead (a provider, or the next ones to try).
        diagnosis: why, and the fix (:func:`~kanjian.inference.providers.diagnose_provider`).
    """

    def __init__(
        self, model: Path, requested: str, instead: str, diagnosis: ProviderDiagnosis
    ) -> None:
        self.model, self.requested, self.instead = model, requested, instead
        self.diagnosis = diagnosis
        super().__init__(
            f"execution provider {requested} (first of model.providers) cannot run "
            f"{model.name}: {diagnosis.cause}. Fix: {diagnosis.fix}; or set "
            f"model.allow_fallback: true to run on {instead} instead"
        )


@dataclass(frozen=True)
class SessionInfo:
    """Which execution providers were asked for and which one runs.

    Attributes:
        requested: provider names in order of preference, as asked.
        active: providers the session really has, in priority order.
        fell_back: ``True`` when the first requested provider is not active.
        fallback_cause: why the first provider does not run ("" when it does).
    """

    requested: tuple[str, ...]
    active: tuple[str, ...]
    fallback_cause: str = ""

    @property
    def provider(self) -> str:
        """The provider that runs most of the graph."""
        return self.active[0] if self.active else "none"

    @property
    def fell_back(self) -> bool:
        return bool(self.requested) and self.requested[0] != self.provider


def cuda_device_present() -> bool:
    """Whether an NVIDIA device node or driver is visible (without loading CUDA)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()


def expand_auto(names: Sequence[str]) -> list[str]:
    """``auto`` means CUDA when an NVIDIA device is present, else the CPU.

    Unlike an explicit ``cuda``, ``auto`` on a machine without a GPU is not a
    fallback and raises no warning.
    """
    out: list[str] = []
    for n in names:
        if n.lower() == "auto":
            out += ["cuda", "cpu"] if cuda_device_present() else ["cpu"]
        else:
            out.append(n)
    return out


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map config names (``cuda``, ``CUDAExecutionProvider``...) to ORT names.

    Unknown or unavailable providers are dropped with a warning; the CPU
    provider is always appended last so a session can be made.
    """
    available = set(ort.get_available_providers())
    out: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            log.warning("execution provider %s is not available in this onnxruntime build", name)
            continue
        if full not in out:
            out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def create_session(
    path: Path,
    providers: Sequence[str] = ("cpu",),
    intra_op_threads: int | None = None,
    provider_options: dict[str, dict[str, Any]] | None = None,
    trt_cache_dir: Path | None = None,
    allow_fallback: bool = False,
) -> tuple[ort.InferenceSession, SessionInfo]:
    """Open an ONNX model with the preferred providers.

    Args:
        path: the ``.onnx`` file.
        providers: preference order, e.g. ``("tensorrt", "cuda", "cpu")``.
        intra_op_threads: ORT's intra-op thread count; ``None`` lets ORT choose.
        provider_options: per-provider options keyed by the ORT provider name.
        trt_cache_dir: where TensorRT engines are cached (default: beside the model,
            ``<model dir>/trt-cache``).
        allow_fallback: when the first provider does not run, run on the next one
            (loudly) instead of refusing. A list that starts with ``auto`` always may.

    Raises:
        ModelLoadError: naming the file, if it is missing or not a valid model.
        ProviderUnavailableError: the first provider does not run and ``allow_fallback``
            is off (a ModelLoadError too).
    """
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    may_fall_back = allow_fallback or (bool(providers) and providers[0].lower() == "auto")
    providers = expand_auto(providers)
    if trt_cache_dir is None:
        trt_cache_dir = path.parent / "trt-cache"
    requested = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    chosen = resolve_providers(providers)
    # A GPU provider whose library cannot load is certain not to run: refused at once when
    # it comes first and no fallback is allowed, else left out. No minutes of TensorRT
    # retries, no ORT error lines ahead of the one that says why, no engine cache folder.
    certain: dict[str, ProviderDiagnosis] = {}
    for p in chosen:
        if p in GPU_PROVIDERS and (found := diagnose_provider(p)).certain:
            certain[p] = found
    if not may_fall_back and requested:
        first = requested[0]
        d = certain.get(first) if first in chosen else diagnose_provider(first)
        if d is not None and d.certain:
            rest = [p for p in chosen if p != first and p not in certain]
            rest = rest or ["CPUExecutionProvider"]
            instead = rest[0] if len(rest) == 1 else f"the first of {', '.join(rest)} that loads"
            raise ProviderUnavailableError(path, first, instead, d)
    chosen = [p for p in chosen if p not in certain]
    opts = ort.SessionOptions()
    if intra_op_threads is not None:
        opts.intra_op_num_threads = intra_op_threads
    # Spinning ORT worker threads steal the core the next stage needs on small CPUs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    options = dict(provider_options or {})
    if "TensorrtExecutionProvider" in chosen and trt_cache_dir is not None:
        # Build TensorRT engines once and keep them: a build takes minutes.
        trt_cache_dir.mkdir(parents=True, exist_ok=True)
        options.setdefault("TensorrtExecutionProvider", {}).update(
            {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(trt_cache_dir),
            }
        )
        if not any(trt_cache_dir.iterdir()):
            log.warning(
                "building TensorRT engines for %s into %s (minutes, once; later starts reuse them)",
                path.name,
                trt_cache_dir,
            )
    prov_args: list[Any] = [(p, options.get(p, {})) for p in chosen]
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=prov_args)
    except Exception as e:  # ORT raises its own exception types for bad files
        raise ModelLoadError(f"cannot load ONNX model {path}: {e}") from e
    info = SessionInfo(requested=tuple(requested), active=tuple(session.get_providers()))
    if info.fell_back:
        d = diagnose_provider(info.requested[0])
        if not may_fall_back:
            raise ProviderUnavailableError(path, info.requested[0], info.provider, d)
        info = dataclasses.replace(info, fallback_cause=d.cause)
        log.warning(
            "asked for %s but ONNX Runtime runs %s for %s: NOT on the requested device "
            "(%s; model.allow_fallback is on)",
            info.requested[0],
            info.provider,
            path.name,
            d.cause,
        )
    return session, info
