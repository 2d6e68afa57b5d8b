"""Data-parallel training on JAX's own sharding machinery: one mesh, one ``data`` axis.

The batch of every step is split along the mesh's ``data`` axis; the parameters, the optimizer
state and the (small) dataset are replicated on every device. Nothing here is a parallel layer
of its own: [`jaxmlp.train_epoch`][] only annotates each batch with a sharding, and XLA's SPMD
partitioner splits the step and inserts the all-reduce of the gradients::

    mesh = jaxmlp.sharding.data_parallel_mesh()          # all devices, every process
    state, x, y = jaxmlp.sharding.replicate((state, x, y), mesh)
    state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=512, mesh=mesh)

or simply ``jaxmlp.fit(..., mesh=mesh)``. The batch size must be a multiple of the device count.

Several processes (several GPUs driven by one process each, or several hosts) join through
[`initialize_distributed`][jaxmlp.sharding.initialize_distributed] before anything else touches JAX;
after that [`data_parallel_mesh`][jaxmlp.sharding.data_parallel_mesh] spans the devices of all
processes, and every process runs the same program on the same (replicated) data. Virtual CPU
devices for testing come from [`set_cpu_device_count`][jaxmlp.sharding.set_cpu_device_count], which
must also run before JAX starts its backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

T = TypeVar("T")


def set_cpu_device_count(count: int) -> None:
    """Expose ``count`` CPU devices (virtual devices splitting the host's cores).

    Must run before JAX initializes its backends (before the first array, ``jax.devices()`` or
    jitted call of the process); afterwards the number of devices is fixed and this raises.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r} is invalid; expected a positive integer")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise RuntimeError(
            f"cannot set {count} CPU devices: JAX's backends are already initialized ({e}); "
            "call set_cpu_device_count first thing, before any JAX computation"
        ) from e


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    coordinator_bind_address: str | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process JAX run (``jax.distributed.initialize``); call it first thing.

    Args:
        coordinator_address: ``host:port`` of process 0, reachable from every process (e.g.
            ``"10.0.0.1:12345"``). ``None``: taken from ``JAX_COORDINATOR_ADDRESS`` or detected
            from the cluster environment (SLURM, Open MPI, TPU pods), as JAX does.
        num_processes: how many processes take part (``None``: detected likewise).
        process_id: this process's rank in ``[0, num_processes)`` (``None``: detected).
        local_device_ids: the local accelerators this process drives (``None``: all visible).
        coordinator_bind_address: where process 0's coordinator listens (``None``: JAX's
            default, every interface at the port of ``coordinator_address``).
        initialization_timeout: seconds to wait for every process to connect.

    On CPU the cross-process collectives go through gloo (JAX's default), so the same code
    runs several CPU processes on one machine for testing.
    """
    if num_processes is not None and (
        isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1
    ):
        raise ValueError(f"num_processes={num_processes!r} is invalid; expected an integer >= 1")
    if process_id is not None and num_processes is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int):
            raise ValueError(f"process_id={process_id!r} is invalid; expected an integer")
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id={process_id} is invalid for {num_processes} processes; expected "
                f"0 <= process_id < {num_processes}"
            )
    if coordinator_address is not None and ":" not in coordinator_address:
        raise ValueError(
            f"coordinator_address={coordinator_address!r} is invalid; expected 'host:port'"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        coordinator_bind_address=coordinator_bind_address,
        initialization_timeout=initialization_timeout,
    )


# jax.Device is an alias of jaxlib's compiled class, assigned at import: pyright sees a variable.
def data_parallel_mesh(
    devices: Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (default: every device of every
    process, ``jax.devices()``), for [`jaxmlp.train_epoch`][] / [`jaxmlp.fit`][]."""
    if devices is None:
        devices = jax.devices()
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty; expected at least one jax.Device")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be jax.Device objects (e.g. jax.devices()), got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device more than once: {devices}")
    return Mesh(np.array(devices), (DATA_AXIS,))


def _check_mesh(mesh: Mesh) -> None:
    if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis, got {mesh!r}")


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of ``mesh``."""
    _check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding that splits an array's leading (batch) axis over the ``data`` axis."""
    _check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: T, mesh: Mesh) -> T:
    """Every array leaf of ``tree`` (a train state, a dataset, ...) copied to all devices of
    ``mesh``; static fields and the tree's structure are unchanged.

    Within one process this is ``jax.device_put``. When the mesh spans several processes,
    each process must pass the same values (same seed, same data): every process contributes
    its copy to its own devices, and the result is one global array per leaf.
    """
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def global_array(leaf: Any):
        if not hasattr(leaf, "shape"):
            return leaf
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(global_array, tree)


def to_host(tree: T) -> T:
    """Every array leaf as a NumPy array on this host. Replicated arrays of a multi-process
    mesh are read from this process's own copy, so every process can call it."""

    def fetch(leaf: Any):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError(
                    f"an array of shape {leaf.shape} is split across processes "
                    f"({leaf.sharding}); only replicated arrays can be read on one host"
                )
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf) if hasattr(leaf, "shape") else leaf

    return jax.tree.map(fetch, tree)


def describe(mesh: Mesh) -> str:
    """One line about a mesh, e.g. ``'data-parallel over 4 devices (cpu) in 2 processes'``."""
    _check_mesh(mesh)
    devices = list(mesh.devices.flat)
    platforms = sorted({d.platform for d in devices})
    processes = len({d.process_index for d in devices})
    return (
        f"data-parallel over {len(devices)} device{'s' if len(devices) != 1 else ''} "
        f"({', '.join(platforms)}) in {processes} process{'es' if processes != 1 else ''}"
    )
