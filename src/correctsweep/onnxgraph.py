"""Small ONNX graphs built with onnx.helper: what a corrector's Model returns from `to_onnx`, and the
pieces export puts around it. onnx is imported inside the functions: it is an optional extra."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPSET = 15  # the newest onnxmltools' XGBoost converter supports (1.16); every node here is valid in it


@dataclass
class OnnxNodes:
    """A piece of g's graph: nodes from one named input to one named output, and what they need."""

    nodes: list
    """onnx NodeProtos, in order."""
    initializers: list = field(default_factory=list)
    """onnx TensorProtos the nodes read (constants)."""
    opsets: dict[str, int] = field(default_factory=dict)
    """Extra operator domains the nodes use -> their version, e.g. {'ai.onnx.ml': 3}."""
    dtype: str = "float32"
    """The output's element type: float32 or float64."""


def const(name: str, value: np.ndarray):
    """An initializer holding `value` as it is (dtype and shape kept)."""
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def node(op: str, inputs: list[str], outputs: list[str], **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, **attrs)


def cast(source: str, target: str, dtype: str):
    """A Cast node to float32 or float64."""
    from onnx import TensorProto

    return node("Cast", [source], [target], to=TensorProto.DOUBLE if dtype == "float64" else TensorProto.FLOAT)
