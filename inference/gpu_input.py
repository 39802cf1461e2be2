"""GPU input path: the CUDA letterbox kernel writes the model input straight into
device memory that ONNX Runtime's CUDA (or TensorRT) provider reads through I/O
binding — no round trip of the float tensor through host memory.

Only the uint8 frame crosses the bus (3 bytes/pixel instead of 12 for the
float tensor), and the model's small outputs come back to the host.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels import Letterbox, letterbox_geometry

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class DeviceInput:
    """Per-thread device buffers and ORT I/O binding for one session.

    Args:
        session: an ORT session whose active provider is CUDA or TensorRT.
        imgsz: model input ``(height, width)``.
        device_id: CUDA device ordinal.
    """

    def __init__(self, session: Any, imgsz: tuple[int, int], device_id: int = 0) -> None:
        from numba import cuda  # imported only on the GPU path

        self._cuda = cuda
        self.session = session
        self.imgsz = imgsz
        self.device_id = device_id
        self._input_name = session.get_inputs()[0].name
        self._output_names = [o.name for o in session.get_outputs()]
        self._local = threading.local()

    def _buffers(self) -> tuple[Any, Any, Any]:
        loc = self._local
        if getattr(loc, "tensor", None) is None:
            loc.stream = self._cuda.stream()
            loc.tensor = self._cuda.device_array(
                (1, 3, *self.imgsz), dtype=np.float32, stream=loc.stream
            )
            loc.binding = self.session.io_binding()
        return loc.tensor, loc.stream, loc.binding

    def letterbox(self, image: NDArray[np.uint8]) -> Letterbox:
        """Copy ``image`` to the device and letterbox it into this thread's input tensor."""
        from kanjian.kernels import letterbox_cuda

        tensor, stream, _ = self._buffers()
        letterbox_cuda(np.ascontiguousarray(image), self.imgsz, out=tensor, stream=stream)
        return letterbox_geometry(image.shape[:2], self.imgsz)

    def run(self) -> list[NDArray[np.float32]]:
        """Run the session on this thread's device tensor; outputs come back to the host."""
        tensor, stream, binding = self._buffers()
        stream.synchronize()  # the kernel must have written the tensor before ORT reads it
        binding.bind_input(
            name=self._input_name,
            device_type="cuda",
            device_id=self.device_id,
            element_type=np.float32,
            shape=tuple(tensor.shape),
            buffer_ptr=tensor.device_ctypes_pointer.value,
        )
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outs: list[NDArray[np.float32]] = binding.copy_outputs_to_cpu()
        return outs


def device_input_for(session: Any, imgsz: tuple[int, int]) -> DeviceInput | None:
    """A :class:`DeviceInput` when the session really runs on a GPU and Numba
    sees CUDA; ``None`` otherwise (the host path is then used)."""
    if session.get_providers()[0] not in GPU_PROVIDERS:
        return None
    try:
        from kanjian.kernels.letterbox_cuda import cuda_available

        if not cuda_available():
            log.warning("ORT runs on CUDA but Numba sees no CUDA device: host preprocessing")
            return None
        return DeviceInput(session, imgsz)
    except Exception as e:  # a broken CUDA install must not stop the station
        log.warning("GPU input path unavailable (%s): host preprocessing", e)
        return None
