"""Model bundles, ONNX Runtime sessions, task decoders, NMS and verdict rules."""

from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict

__all__ = ["Detections", "Inspection", "ModelRef", "Verdict"]
