"""Model bundles, ONNX Runtime sessions, task heads (one per model task), NMS and verdict rules."""

from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict

__all__ = ["Detections", "Inspection", "ModelRef", "Verdict"]
