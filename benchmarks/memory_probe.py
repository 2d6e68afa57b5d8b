"""Peak memory of training one architecture, measured in a fresh process.

``python -m benchmarks.memory_probe WIDTH BATCH STEPS``: builds 784-WIDTH-WIDTH-10 with Adam,
runs STEPS jitted steps on random data and prints one JSON line with the peak resident set
size (the process's high-water mark, so a fresh process per point) and, on a GPU, the device's
peak bytes in use. The caller cleans the BLAS environment.
"""

from __future__ import annotations

import json
import resource
import sys


def _peak_rss_mib() -> float:
    """The high-water mark of this process's resident memory.

    VmHWM belongs to the address space made at exec, whereas ru_maxrss carries over the peak
    of the parent that forked this process.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(width: int, batch: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxmlp

    sizes = (784, width, width, 10)
    optimizer = optax.adam(1e-3)
    params = jaxmlp.init_mlp(jax.random.key(0), sizes)
    opt_state = optimizer.init(params)
    x = jax.random.uniform(jax.random.key(1), (batch, 784))
    y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(jaxmlp.loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    stats = jax.devices()[0].memory_stats() or {}
    parameters = jaxmlp.parameter_count(sizes)
    return {
        "width": width,
        "batch": batch,
        "parameters": int(parameters),
        "peak_rss_mib": _peak_rss_mib(),
        "device_peak_mib": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
        "device_limit_mib": stats.get("bytes_limit", 0) / 2**20 or None,
        "state_mib": 4 * 4 * int(parameters) / 2**20,  # params, grads, Adam's two moments
        "dtype": str(jnp.float32.dtype),
    }


if __name__ == "__main__":
    print(json.dumps(main(*(int(argument) for argument in sys.argv[1:4]))))
