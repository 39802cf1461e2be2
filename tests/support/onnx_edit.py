"""Deliberately broken copies of a test model's ONNX file, for tests that a check catches them."""

from __future__ import annotations

from pathlib import Path


def perturb_weights(onnx_path: Path) -> None:
    """Multiply every conv weight by 1 + 10 % seeded noise: a different model.

    (Scaling one tensor is not enough: the largest one, a deep backbone conv, moved
    the test model's scores by only 5e-5.)
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        if len(init.dims) == 4:
            arr = numpy_helper.to_array(init).astype(np.float32)
            arr *= 1 + 0.1 * rng.standard_normal(arr.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(onnx_path))


def negate_mask_prototypes(onnx_path: Path) -> None:
    """Append a ``Neg`` to the mask-prototype output: boxes, classes, scores and mask
    coefficients stay bit for bit the same, and every mask logit changes sign.

    A mask is ``coefficients x prototypes > 0`` cropped to its box, so each mask
    becomes exactly the rest of its box: disjoint from the mask it replaces (the
    bilinear resizes are linear, and two disjoint binary masks cannot both be above
    one half at the same pixel after one). A box whose mask filled it is dropped.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    protos = model.graph.output[1].name  # output1: (1, 32, h/4, w/4) prototypes
    raw = f"{protos}_before_neg"
    for node in model.graph.node:
        node.output[:] = [raw if o == protos else o for o in node.output]
        node.input[:] = [raw if i == protos else i for i in node.input]
    model.graph.node.append(helper.make_node("Neg", [raw], [protos], name="break_protos"))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
