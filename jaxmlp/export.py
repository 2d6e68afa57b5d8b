"""A trained MLP as a file other programs run: an ONNX graph, or a serialized ``jax.export``.

Both take a batch of images and give the class scores of [`jaxmlp.forward`][]: the logits,
before the output's softmax (or sigmoid). Neither includes the pixel normalization; what the
model expects is stated in its metadata (``metadata``), which the caller supplies::

    model = export.to_onnx(params, activation="relu", metadata={"jaxmlp.normalize": "unit"})
    export.save_onnx(model, "mnist.onnx")        # onnxruntime.InferenceSession("mnist.onnx")

    exported = export.to_jax_export(params, activation="relu")
    export.save_jax_export(exported, "mnist.jax", metadata={"jaxmlp.normalize": "unit"})
    # elsewhere, without jaxmlp:
    #   jax.export.deserialize(open("mnist.jax", "rb").read()).call(images)

Both compute in float32 (parameters of a float64 model are rounded to float32). The ONNX side
needs the optional ``onnx`` package (``pip install onnx``, or ``pip install 'jaxmlp[export]'``),
imported only when an ONNX model is built.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _files, _validation
from jaxmlp.model import ACTIVATIONS, Params, forward, layer_sizes_of

if TYPE_CHECKING:
    import onnx

__all__ = [
    "INPUT_NAME",
    "JAX_PLATFORMS",
    "ONNX_ACTIVATIONS",
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "metadata_path",
    "save_jax_export",
    "save_onnx",
    "to_jax_export",
    "to_onnx",
]

INPUT_NAME = "images"
"""The ONNX model's input: float32 (batch, n_in), normalized as its metadata says."""
OUTPUT_NAME = "scores"
"""The ONNX model's output: float32 (batch, n_out), the logits of [`jaxmlp.forward`][]."""
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
"""The IR version of opset 17 (onnx 1.12): files that onnxruntime 1.12 and later read."""
ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}
"""The ONNX operator of each hidden activation of [`jaxmlp.ACTIVATIONS`][]."""
JAX_PLATFORMS = ("cpu", "cuda")
"""Where a ``jax.export`` file runs by default: on a CPU and on an NVIDIA GPU."""

assert set(ONNX_ACTIVATIONS) == set(ACTIVATIONS), "an activation has no ONNX operator"


def _float32_layers(params: Params, activation: str) -> list[dict[str, np.ndarray]]:
    """The checked parameters as float32 NumPy arrays."""
    _validation.check_params(params)
    _validation.check_choice("activation", activation, ACTIVATIONS)
    return [{name: np.asarray(layer[name], np.float32) for name in ("w", "b")} for layer in params]


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "exporting to ONNX needs the onnx package, which is not installed: "
            "pip install onnx (or pip install 'jaxmlp[export]')"
        ) from None
    return onnx


def to_onnx(
    params: Params,
    *,
    activation: str = "relu",
    metadata: Mapping[str, Any] | None = None,
) -> onnx.ModelProto:
    """An ONNX model of the MLP's forward pass in evaluation mode (no dropout).

    The graph is one ``Gemm`` per layer (``z = a @ w + b``), each hidden one followed by the
    activation's operator ([`ONNX_ACTIVATIONS`][jaxmlp.export.ONNX_ACTIVATIONS]: ``Relu``,
    ``Sigmoid``, ``Tanh``, ``Identity``), in opset ``ONNX_OPSET``; the
    parameters are float32 initializers named ``layer{i}.w`` and ``layer{i}.b``. It is checked with
    ``onnx.checker.check_model``.

    Args:
        params: as returned by [`jaxmlp.init_mlp`][], layers ``{"w": (n_in, n_out),
            "b": (n_out,)}``.
        activation: the hidden nonlinearity the parameters were trained with.
        metadata: the model's ``metadata_props``, key to value; strings are stored as they are,
            other values as JSON (``[784, 256, 10]``).

    Returns:
        An ``onnx.ModelProto`` with input ``images`` float32 (batch, n_in), the batch dimension
        dynamic, and output ``scores`` float32 (batch, n_out): the logits, as
        [`jaxmlp.forward`][] gives them.

    Raises:
        ImportError: the ``onnx`` package is not installed (the message says how to install it).
    """
    layers = _float32_layers(params, activation)
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []
    a = INPUT_NAME
    for index, layer in enumerate(layers):
        w_name, b_name = f"layer{index}.w", f"layer{index}.b"
        initializers += [
            numpy_helper.from_array(layer["w"], w_name),
            numpy_helper.from_array(layer["b"], b_name),
        ]
        last = index == len(layers) - 1
        z = OUTPUT_NAME if last else f"layer{index}.z"
        nodes.append(helper.make_node("Gemm", [a, w_name, b_name], [z], name=f"layer{index}.gemm"))
        if not last:
            a = f"layer{index}.a"
            nodes.append(
                helper.make_node(
                    ONNX_ACTIVATIONS[activation], [z], [a], name=f"layer{index}.{activation}"
                )
            )
    n_in, n_out = layers[0]["w"].shape[0], layers[-1]["w"].shape[1]
    graph = helper.make_graph(
        nodes,
        "jaxmlp_mlp",
        [
            helper.make_tensor_value_info(
                INPUT_NAME,
                TensorProto.FLOAT,
                ["batch", n_in],
                doc_string="images, one row each, normalized as the metadata says",
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME,
                TensorProto.FLOAT,
                ["batch", n_out],
                doc_string="class scores: the logits (before softmax or sigmoid)",
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="jaxmlp",
        producer_version=importlib.metadata.version("jaxmlp"),
        doc_string=f"MLP {'-'.join(map(str, layer_sizes_of(layers)))} ({activation}); "
        "outputs the logits",
    )
    helper.set_model_props(
        model,
        {
            str(key): value if isinstance(value, str) else json.dumps(value)
            for key, value in (metadata or {}).items()
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write an ONNX model to ``path`` atomically (`jaxmlp._files.atomic_write`)."""
    data = model.SerializeToString()
    return _files.atomic_write(path, lambda f: f.write(data))


def to_jax_export(
    params: Params,
    *,
    activation: str = "relu",
    platforms: Sequence[str] = JAX_PLATFORMS,
) -> jax.export.Exported:
    """The MLP's forward pass in evaluation mode as a ``jax.export.Exported``.

    The function exported is ``images (batch, n_in) float32 -> logits (batch, n_out) float32``
    ([`jaxmlp.forward`][]), with a symbolic batch size (any ``batch >= 1``) and the float32
    parameters embedded as constants: ``exported.serialize()`` is all another process needs,
    ``jax.export.deserialize(blob).call(images)``, without jaxmlp.

    Args:
        params: as returned by [`jaxmlp.init_mlp`][].
        activation: the hidden nonlinearity the parameters were trained with.
        platforms: the platforms the program is lowered for (``"cpu"``, ``"cuda"``, ``"rocm"``,
            ``"tpu"``); it runs on any of them.
    """
    layers = _float32_layers(params, activation)
    constants = [{name: jnp.asarray(array) for name, array in layer.items()} for layer in layers]

    def scores(images):
        return forward(constants, images, activation=activation)

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, layers[0]["w"].shape[0]), jnp.float32)
    return jax.export.export(jax.jit(scores), platforms=tuple(platforms))(spec)


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The JSON file beside a ``jax.export`` file that holds its metadata: ``FILE.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_jax_export(
    exported: jax.export.Exported,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``exported.serialize()`` to ``path`` and, when ``metadata`` is given, the metadata
    as JSON to [`metadata_path`][jaxmlp.export.metadata_path] (``FILE.json``; a serialized
    ``jax.export`` has no field of its own for it). Both are written atomically; the JSON first."""
    if metadata is not None:
        _files.write_json(metadata_path(path), dict(metadata))
    data = bytes(exported.serialize())
    return _files.atomic_write(path, lambda f: f.write(data))
