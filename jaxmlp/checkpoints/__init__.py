"""Checkpoints of a [`TrainState`][jaxmlp.TrainState], one per epoch, and files of parameters alone.

Save every epoch from your own training loop, and later continue from the latest good one::

    import jax
    import jaxmlp
    from jaxmlp import checkpoints

    layer_sizes, optimizer = (6, 5, 3), jaxmlp.optimizer("adam", 1e-2)
    x = jax.random.normal(jax.random.key(1), (64, 6))
    y = jax.random.randint(jax.random.key(2), (64,), 0, 3)

    state = jaxmlp.create_train_state(jax.random.key(0), layer_sizes, optimizer)
    for epoch in range(1, 4):
        state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=16)
        checkpoints.save("run/checkpoints", epoch, state, meta={"loss": float(metrics["loss"])})

    # Later (a new process): a fresh state of the same configuration is the target that the
    # saved arrays are restored into.
    target = jaxmlp.create_train_state(jax.random.key(0), layer_sizes, optimizer)
    restored = checkpoints.restore("run/checkpoints", target)  # the latest good epoch: 3
    state = restored.state
    for epoch in range(restored.epoch + 1, 6):
        state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=16)
        checkpoints.save("run/checkpoints", epoch, state)

    # The parameters alone, in one file, e.g. to evaluate or ship a model:
    checkpoints.save_params("model.npz", state.params, meta={"epochs": 5})
    params = checkpoints.load_params("model.npz")
    logits = jaxmlp.forward(params, x)

The continued run is the run that was never interrupted, bit for bit (on the same machine and
JAX version): a checkpoint holds the whole train state's arrays (parameters, optimizer state,
step and the PRNG key that shuffles and drops out). It does not hold the state's static fields,
the optimizer (an ``optax`` transformation: code) and the [`ModelOptions`][jaxmlp.ModelOptions], nor
the optimizer state's tree structure (which the optimizer decides). These come from the
*target*, a freshly created state of the saved configuration, which also fixes the shapes and
dtypes the arrays must have; its own values are discarded. Build it with the same layer sizes,
dtype, optimizer and ``options`` as the saved run: a target with another learning rate continues
with that learning rate, and one of another architecture, dtype or optimizer state is refused
with an `ArchitectureMismatchError` naming both.

Checkpoint directory (format 2)
-------------------------------

A checkpoint directory holds one sub-directory per saved epoch::

    <dir>/<epoch>/
        arrays.npz   the arrays of the train state, an uncompressed NumPy .npz (one .npy each)
        meta.json    the epoch, the layer sizes, the dtype, the name, dtype and shape of every
                     array, a sha256 of every array's bytes, and whatever the caller adds (the
                     CLI stores the per-epoch history and the config there, so that the history
                     and the state always come from the same moment)

The arrays are named by their path in the train state: ``params/<layer>/w`` and
``params/<layer>/b``, ``opt_state/0000``, ``opt_state/0001``... (the optimizer state's leaves in
``jax.tree.leaves`` order), ``step`` (int32 scalar) and ``key`` (raw ``uint32`` key data).

A step is written whole into a hidden sibling directory ``<dir>/.tmp-<epoch>-<pid>``, both
files and the directory fsynced, and only then renamed to ``<dir>/<epoch>``: a numbered
directory is complete by construction, and a save killed part-way leaves a ``.tmp-`` directory
that is never listed and that the next save removes. Old steps beyond ``keep`` (but not those
of ``also_keep``, such as the best epoch) are first renamed to a hidden ``.deleting-`` name and
then deleted, so a kill mid-deletion never leaves a half step listed either. A checkpoint that
cannot be read or whose bytes do not match its sha256 is skipped in favour of the previous one
(`restore_latest` reports which were skipped).

The package's modules: ``_states`` (a train state per epoch), ``_params`` (parameters alone)
and ``_common`` (checksums, error messages, argument checks); files are written through
`jaxmlp._files.atomic_write`.

The arrays are not written through orbax-checkpoint: every orbax save path measured (a
``CheckpointManager`` with or without item handlers, reused or not, a ``StandardCheckpointer``,
``PyTreeCheckpointer`` or synchronous ``Checkpointer``, with or without OCDBT) kept 20-42 kB per
save alive in the process (``scripts/checkpoint_memory.py``; tensorstore's Python bindings leak
the metrics and spec objects that orbax queries on every save), which a run with a checkpoint
per epoch shows as memory growing by the epoch; this writer keeps 0.3 kB.

Params file
-----------

`save_params` writes one ``.npz`` holding the arrays and a JSON header with the layer
sizes, dtype and sha256; `jaxmlp.checkpoints._params` describes it.
"""

from jaxmlp.checkpoints._common import CheckpointError as CheckpointError
from jaxmlp.checkpoints._common import checksum as checksum
from jaxmlp.checkpoints._params import load_params as load_params
from jaxmlp.checkpoints._params import read_params_meta as read_params_meta
from jaxmlp.checkpoints._params import save_params as save_params
from jaxmlp.checkpoints._states import ARRAYS_FILE as ARRAYS_FILE
from jaxmlp.checkpoints._states import FORMAT_VERSION as FORMAT_VERSION
from jaxmlp.checkpoints._states import META_FILE as META_FILE
from jaxmlp.checkpoints._states import ArchitectureMismatchError as ArchitectureMismatchError
from jaxmlp.checkpoints._states import Restored as Restored
from jaxmlp.checkpoints._states import list_steps as list_steps
from jaxmlp.checkpoints._states import read_meta as read_meta
from jaxmlp.checkpoints._states import restore as restore
from jaxmlp.checkpoints._states import restore_latest as restore_latest
from jaxmlp.checkpoints._states import save as save
from jaxmlp.checkpoints._states import state_arrays as state_arrays
