"""The parameters of an MLP alone, in one file (re-exported by [`jaxmlp.checkpoints`][]).

`save_params` writes one uncompressed NumPy ``.npz``: the arrays ``params/<layer>/w`` and
``params/<layer>/b`` (named as in a checkpoint's ``arrays.npz``) and ``header``, a 0-d string
array holding JSON: ``"format": "jaxmlp-params"``, ``"version"``, the layer sizes, the dtype,
the name, dtype and shape of every array, their sha256 (as in a checkpoint's ``meta.json``),
the time it was saved and whatever the caller adds. It is written through
`jaxmlp._files.atomic_write` (a hidden temporary file in the same folder, fsynced and
renamed over the destination): the file is whole or absent. Any NumPy reads it
(``np.load(path)["params/0/w"]``); `load_params` also verifies it.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validation
from jaxmlp._files import atomic_write
from jaxmlp.checkpoints._common import (
    CheckpointError,
    as_dtype,
    check_meta,
    check_path,
    checksum,
    named_leaves,
    one_line,
)
from jaxmlp.model import layer_sizes_of
from jaxmlp.training import TrainState

PARAMS_FORMAT = "jaxmlp-params"
PARAMS_VERSION = 1
PARAMS_HEADER = "header"
# The keys save_params sets in the header; a caller's meta may not replace them.
_PARAMS_KEYS = frozenset({"format", "version", "layer_sizes", "dtype", "arrays", "sha256"})


def save_params(
    path: str | os.PathLike[str], params: Any, *, meta: dict[str, Any] | None = None
) -> Path:
    """Writes ``params`` (a list of ``{"w": (n_in, n_out), "b": (n_out,)}`` layers, as from
    [`jaxmlp.init_mlp`][] or ``state.params``) to the one file ``path``, exactly as given
    (``.npz`` is the usual suffix; none is added), and returns it as a `Path`.

    ``meta``: JSON values stored in the file's header and returned by
    `read_params_meta`; its keys may not be the format's own (``format``, ``version``,
    ``layer_sizes``, ``dtype``, ``arrays``, ``sha256``). The file is written to a temporary
    file in the same folder, fsynced and renamed over ``path``: it is whole or absent. Missing
    folders are created.

    Raises:
        CheckpointError: the file cannot be written (an older file at ``path`` is intact).
        TypeError, ValueError: ``params`` is not a parameter list; ``meta`` is not a dict of JSON
            values or uses a reserved key.
    """
    path = check_path("path", path)
    if isinstance(params, TrainState):
        raise TypeError(
            "params must be a list of {'w', 'b'} layers, got a TrainState: pass state.params, "
            "or save the whole state with save()"
        )
    _validation.check_params(params)
    extra = check_meta(meta, _PARAMS_KEYS)
    host = [{"w": np.asarray(layer["w"]), "b": np.asarray(layer["b"])} for layer in params]
    named = named_leaves({"params": host})
    header = {
        "format": PARAMS_FORMAT,
        "version": PARAMS_VERSION,
        "layer_sizes": list(layer_sizes_of(host)),
        "dtype": str(host[0]["w"].dtype),
        "arrays": [[name, str(value.dtype), list(value.shape)] for name, value in named],
        "sha256": checksum(host),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    text = json.dumps(header, indent=1)  # a caller's unserializable meta fails here
    try:
        atomic_write(path, lambda f: np.savez(f, **{PARAMS_HEADER: np.array(text)}, **dict(named)))
    except Exception as e:
        raise CheckpointError(f"cannot save the parameters to {path}: {one_line(e)}") from e
    return path


def _open_params(path: Path) -> tuple[Any, dict[str, Any]]:
    """``(npz, header)`` of a params file (the caller closes the npz)."""
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a params file (restore a checkpoint directory with "
            "restore())"
        )
    if not path.exists():
        raise CheckpointError(f"no params file at {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {one_line(e)}") from e
    try:
        # From memory: np.load leaves the file it opened unclosed when the archive is broken.
        stored = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a jaxmlp params file: not a readable .npz archive ({one_line(e)}); "
            "is it damaged or cut short?"
        ) from e
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path} is not a jaxmlp params file: a .npy array, not an .npz")
    try:
        if PARAMS_HEADER not in stored.files:
            looks_like = (
                " (it looks like a checkpoint's arrays.npz)" if "step" in stored.files else ""
            )
            raise CheckpointError(f"{path} is not a jaxmlp params file: no header{looks_like}")
        try:
            header = json.loads(str(stored[PARAMS_HEADER]))
            if not isinstance(header, dict) or header.get("format") != PARAMS_FORMAT:
                raise ValueError(f'its header has no "format": "{PARAMS_FORMAT}"')
        except Exception as e:
            raise CheckpointError(
                f"{path} is not a jaxmlp params file, or is damaged: {one_line(e)}"
            ) from e
        if not isinstance(header.get("version"), int) or header["version"] > PARAMS_VERSION:
            raise CheckpointError(
                f"{path} is a params file of version {header.get('version')!r}; this jaxmlp "
                f"reads version {PARAMS_VERSION} (was it written by a newer jaxmlp?)"
            )
    except BaseException:
        stored.close()
        raise
    return stored, header


def _params_from(stored: Any, header: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """The parameter list in an open params file, checked against its header."""
    arrays = header["arrays"]
    n_layers = len(arrays) // 2
    expected = [f"params/{i}/{part}" for i in range(n_layers) for part in ("b", "w")]
    names = [entry[0] for entry in arrays]
    if not n_layers or names != expected:
        raise ValueError(f"its arrays {names[:4]}... are not layers {expected[:4]}...")
    host: list[dict[str, np.ndarray]] = [{} for _ in range(n_layers)]
    for name, dtype_name, shape in arrays:
        dtype = jnp.dtype(dtype_name)
        value = as_dtype(stored[name], dtype)
        if (value.dtype, value.shape) != (dtype, tuple(shape)):
            raise ValueError(
                f"{name} is {value.shape}/{value.dtype}, its header says {tuple(shape)}/{dtype}"
            )
        _, layer, part = name.split("/")
        host[int(layer)][part] = value
    _validation.check_params(host)
    if list(layer_sizes_of(host)) != header["layer_sizes"]:
        raise ValueError(
            f"its arrays are a {layer_sizes_of(host)} model, its header says "
            f"{header['layer_sizes']}"
        )
    if checksum(host) != header["sha256"]:
        raise ValueError("the arrays do not match the sha256 saved with them")
    return host


def load_params(path: str | os.PathLike[str]) -> list[dict[str, jax.Array]]:
    """The parameters saved by `save_params`: a list of ``{"w": (n_in, n_out),
    "b": (n_out,)}`` layers of JAX arrays, bit for bit as saved, after checking the arrays
    against the header's structure and sha256.

    Raises:
        CheckpointError: there is no file at ``path``, it is not a jaxmlp params file, or it is
            damaged (unreadable, or arrays that do not match the header or its sha256).
        ValueError: the file holds 64-bit arrays but JAX has 64-bit types disabled (they would be
            rounded to 32 bits); load inside ``jax.enable_x64(True)``.
    """
    path = check_path("path", path)
    stored, header = _open_params(path)
    with stored:
        try:
            host = _params_from(stored, header)
        except Exception as e:
            raise CheckpointError(f"{path} is damaged: {one_line(e)}") from e
    dtypes = {value.dtype for layer in host for value in layer.values()}
    narrowed = sorted(str(d) for d in dtypes if jax.dtypes.canonicalize_dtype(d) != d)
    if narrowed:
        raise ValueError(
            f"{path} holds {', '.join(narrowed)} parameters but JAX has 64-bit types disabled; "
            "expected jax.enable_x64(True) (or JAX_ENABLE_X64=1) to load them without rounding"
        )
    return [{"w": jnp.asarray(layer["w"]), "b": jnp.asarray(layer["b"])} for layer in host]


def read_params_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a params file (the format's keys and the caller's ``meta``); no
    arrays are read or verified.

    Raises:
        CheckpointError: there is no file at ``path``, or it is not a jaxmlp params file.
    """
    stored, header = _open_params(check_path("path", path))
    stored.close()
    return header
