"""Child processes for the data-parallel tests; each run sets its device count before JAX starts.

    python tests/helpers_distributed.py compare --devices 4 --out result.json
        one process with 4 virtual CPU devices: trains the same model on one device and
        data-parallel over 2 and 4 devices, and reports the parameter differences.
    python tests/helpers_distributed.py worker --process-id I --num-processes 2 --port P \
        --devices 2 --out params-I.npz
        one of several processes joined over 127.0.0.1:P, training data-parallel over the
        global mesh of all their devices; writes the final parameters.
    python tests/helpers_distributed.py single --devices N --out params.npz
        the same training in one process over N devices (N = 1: no mesh); writes parameters.

Every mode trains the same recipe (:func:`train`), so their parameters must agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# Synthetic MNIST-shaped data: deterministic, no files needed.
N_EXAMPLES, FEATURES, CLASSES, HIDDEN = 1000, 784, 10, 32
BATCH, EPOCHS = 128, 2  # 1000 = 7 * 128 + 104: the last batch is ragged (padded and masked)


def synthetic_data():
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (N_EXAMPLES, FEATURES)).astype(np.float32)
    teacher = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    labels = np.argmax(images @ teacher, axis=1).astype(np.int32)
    return images, labels


def train(mesh):
    """Params (NumPy) and history after EPOCHS epochs of the fixed recipe on ``mesh``."""
    import jax

    import jaxmlp
    from jaxmlp import sharding

    images, labels = synthetic_data()
    state, history = jaxmlp.fit(
        jax.random.key(0),
        (FEATURES, HIDDEN, CLASSES),
        images,
        labels,
        optimizer=jaxmlp.optimizer("adam", 1e-3),
        epochs=EPOCHS,
        batch_size=BATCH,
        dropout_rate=0.1,
        mesh=mesh,
        validation_data=(images[:200], labels[:200]),
    )
    return sharding.to_host(state.params), history


def flat(params):
    return {f"{i}_{k}": layer[k] for i, layer in enumerate(params) for k in ("w", "b")}


def max_difference(a, b) -> float:
    import numpy as np

    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("compare", "worker", "single"))
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from jaxmlp import sharding

    # Before anything touches JAX's backends.
    sharding.set_cpu_device_count(args.devices)
    if args.mode == "worker":
        address = f"127.0.0.1:{args.port}"
        sharding.initialize_distributed(
            address,
            args.num_processes,
            args.process_id,
            coordinator_bind_address=address,
            initialization_timeout=60,
        )

    import jax
    import numpy as np

    started = time.perf_counter()
    if args.mode == "compare":
        reference, _ = train(None)
        devices = jax.devices()
        report = {"devices": len(devices), "max_abs_diff": {}, "seconds": {}}
        for count in sorted({2, len(devices)}):
            began = time.perf_counter()
            params, history = train(sharding.data_parallel_mesh(devices[:count]))
            report["max_abs_diff"][str(count)] = max_difference(flat(reference), flat(params))
            report["seconds"][str(count)] = time.perf_counter() - began
            report["epochs"] = [r["epoch"] for r in history]
        with open(args.out, "w") as f:
            json.dump(report, f)
        return 0

    mesh = sharding.data_parallel_mesh() if args.mode == "worker" or args.devices > 1 else None
    params, history = train(mesh)
    np.savez(args.out, **flat(params))
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "local_devices": jax.local_device_count(),
                "global_devices": jax.device_count(),
                "mesh": sharding.describe(mesh) if mesh is not None else "one device",
                "final_loss": history[-1]["loss"],
                "seconds": time.perf_counter() - started,
            }
        ),
        flush=True,
    )
    if args.mode == "worker":
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
