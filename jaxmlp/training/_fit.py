"""``fit``: the one training loop, used by library code and by ``jaxmlp train``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import numpy as np
import optax

from jaxmlp import _validation
from jaxmlp.model import layer_sizes_of
from jaxmlp.optimizers import plateau_scale
from jaxmlp.training._epoch import check_epoch_arguments, epoch_program, steps_per_epoch
from jaxmlp.training._evaluate import evaluate
from jaxmlp.training._options import ModelOptions, model_option_names
from jaxmlp.training._state import TrainState, check_state, create_train_state

Record = dict[str, Any]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient at ``epoch``, ``step`` (1-based).

    ``state`` is the state from the start of that epoch, the last one known to be good, and
    ``history`` the records of the epochs before it.
    """

    def __init__(
        self,
        message: str,
        state: TrainState,
        epoch: int,
        step: int,
        history: list[Record] | None = None,
    ):
        super().__init__(message)
        self.state, self.epoch, self.step = state, epoch, step
        self.history = list(history or [])


def _state_for(
    state: TrainState | None,
    key,
    layer_sizes,
    optimizer,
    options: ModelOptions | None,
    model_options: dict[str, Any],
    init_arguments: dict[str, Any],
) -> TrainState:
    """The state to train: the given one (refusing arguments that contradict it) or a new one."""
    unknown = sorted(set(model_options) - set(model_option_names()))
    if unknown:
        raise TypeError(
            f"fit got unknown options {unknown}; model options are "
            f"{', '.join(model_option_names())}"
        )
    if options is not None and model_options:
        raise TypeError(
            f"give either options= or model options ({', '.join(model_options)}=), not both"
        )
    if state is None:
        if key is None or layer_sizes is None or optimizer is None:
            raise TypeError(
                "fit needs key, layer_sizes and optimizer to create a train state (or a "
                "state= to continue)"
            )
        sizes = _validation.check_layer_sizes(layer_sizes)
        if options is None:
            options = ModelOptions(**model_options)
        given = {k: v for k, v in init_arguments.items() if v is not None}
        return create_train_state(key, sizes, optimizer, options=options, **given)
    check_state(state)
    own_sizes = layer_sizes_of(state.params)
    problems = []
    if key is not None:
        problems.append("key (the state carries its own key)")
    if layer_sizes is not None and tuple(layer_sizes) != own_sizes:
        problems.append(
            f"layer_sizes={tuple(layer_sizes)} (the state's model is "
            f"{'-'.join(map(str, own_sizes))})"
        )
    if optimizer is not None and optimizer is not state.optimizer:
        problems.append(
            "optimizer (another object than the state's optimizer; to change optimizers, start "
            "a new state with create_train_state(..., params=state.params))"
        )
    if options is not None and options != state.options:
        problems.append(f"options={options} (the state's are {state.options})")
    for name, value in model_options.items():
        if getattr(state.options, name) != value:
            problems.append(f"{name}={value!r} (the state's is {getattr(state.options, name)!r})")
    for name, value in init_arguments.items():
        if value is not None:
            problems.append(f"{name}={value!r} (it only applies to a new state)")
    if problems:
        raise ValueError(
            "fit(state=...) continues that state as it is, but it was also given "
            + "; ".join(problems)
        )
    return state


def _check_history(history) -> list[Record]:
    if history is None:
        return []
    if not isinstance(history, Sequence) or not all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in history
    ):
        raise TypeError(
            "history must be a list of per-epoch records (dicts with an int 'epoch'), as fit "
            "returns it"
        )
    return [dict(r) for r in history]


MONITORS = ("validation_accuracy", "validation_loss")
"""What the best epoch is chosen by: the highest validation accuracy, or the lowest validation
loss."""


def check_monitor(monitor, min_delta) -> tuple[str, float]:
    """``(monitor, min_delta)``, checked: a name of [`MONITORS`][jaxmlp.MONITORS] and a finite
    number >= 0."""
    _validation.check_choice("monitor", monitor, MONITORS)
    _validation.check_non_negative("min_delta", min_delta)
    return monitor, float(min_delta)


def best_epoch(
    history: Sequence[Record], *, monitor: str = "validation_accuracy", min_delta: float = 0.0
) -> int | None:
    """The epoch of ``history`` (records as [`fit`][jaxmlp.fit] returns them) whose ``monitor``
    value is the best, or None when no record has that value (no validation data).

    The first record with a value is the best to start with; a later epoch replaces it when it
    improves on it by more than ``min_delta``: accuracy ``a > best + min_delta``, loss
    ``l < best - min_delta`` (the rule of Keras' and Lightning's ``EarlyStopping``). A tie, or a
    gain of at most ``min_delta``, keeps the earlier epoch; a NaN never improves.

    Args:
        history: per-epoch records, each a dict with an int ``epoch``.
        monitor: ``"validation_accuracy"`` (higher is better) or ``"validation_loss"`` (lower).
        min_delta: the smallest change that counts as an improvement, in the monitor's units
            (a fraction for the accuracy: 0.001 is 0.1 percentage points).

    Returns:
        The best epoch's number, or None.

    Examples:
        >>> import jaxmlp
        >>> history = [{"epoch": 1, "validation_accuracy": 0.90},
        ...            {"epoch": 2, "validation_accuracy": 0.95},
        ...            {"epoch": 3, "validation_accuracy": 0.94}]
        >>> jaxmlp.best_epoch(history)
        2
    """
    monitor, min_delta = check_monitor(monitor, min_delta)
    sign = 1.0 if monitor == "validation_accuracy" else -1.0
    best, best_value = None, None
    for record in _check_history(history):
        if monitor not in record:
            continue
        value = sign * float(record[monitor])
        if best_value is None or value - min_delta > best_value:
            best, best_value = record["epoch"], value
    return best


def should_stop(
    history: Sequence[Record],
    *,
    patience: int,
    monitor: str = "validation_accuracy",
    min_delta: float = 0.0,
) -> bool:
    """Whether early stopping stops after the last record of ``history``: the epochs after
    its [`best_epoch`][jaxmlp.best_epoch] (all of them when there is none) number at least
    ``patience``.

    The rule of [`fit`][jaxmlp.fit]'s ``early_stopping_patience``, of Keras' ``EarlyStopping`` and
    of Lightning's: with patience 3 and the best epoch 12, training stops after epoch 15 unless
    epoch 13, 14 or 15 improves on it.

    Args:
        history: per-epoch records, as [`fit`][jaxmlp.fit] returns them.
        patience: epochs in a row without an improvement that stop training, >= 1.
        monitor: as for [`best_epoch`][jaxmlp.best_epoch].
        min_delta: as for [`best_epoch`][jaxmlp.best_epoch].

    Returns:
        True when training should stop (never for an empty history).

    Examples:
        >>> import jaxmlp
        >>> history = [{"epoch": 1, "validation_accuracy": 0.90},
        ...            {"epoch": 2, "validation_accuracy": 0.95},
        ...            {"epoch": 3, "validation_accuracy": 0.94}]
        >>> jaxmlp.should_stop(history, patience=1), jaxmlp.should_stop(history, patience=2)
        (True, False)
    """
    patience = _validation.check_positive_int("patience", patience)
    best = best_epoch(history, monitor=monitor, min_delta=min_delta)
    since = sum(1 for record in history if best is None or record["epoch"] > best)
    return bool(history) and since >= patience


def _check_stopping(
    monitor, early_stopping_patience, min_delta, restore_best, validation_data
) -> tuple[str, float]:
    """The early-stopping arguments of [`fit`][jaxmlp.fit], checked before anything compiles."""
    monitor, min_delta = check_monitor(monitor, min_delta)
    if early_stopping_patience is not None:
        _validation.check_positive_int("early_stopping_patience", early_stopping_patience)
    if not isinstance(restore_best, bool):
        raise TypeError(f"restore_best must be True or False, got {restore_best!r}")
    if validation_data is None:
        uses = [
            f"{name}={value!r}"
            for name, value in (
                ("early_stopping_patience", early_stopping_patience),
                ("restore_best", restore_best or None),
            )
            if value is not None
        ]
        if uses:
            raise ValueError(
                f"{' and '.join(uses)} watch {monitor}, which needs validation_data=(x, y)"
            )
    return monitor, min_delta


def fit(
    key: jax.Array | None = None,
    layer_sizes: Sequence[int] | None = None,
    x_train: jax.Array | np.ndarray | None = None,
    y_train: jax.Array | np.ndarray | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int,
    batch_size: int,
    validation_data: tuple[Any, Any] | None = None,
    init: str | None = None,
    init_scale: float | None = None,
    dtype: Any = None,
    evaluate_train: bool = False,
    state: TrainState | None = None,
    history: Sequence[Record] | None = None,
    on_epoch_end: Callable[[TrainState, Record], bool | None] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    on_step: Callable[[int, Record], None] | None = None,
    log_every_steps: int = 50,
    early_stopping_patience: int | None = None,
    monitor: str = "validation_accuracy",
    min_delta: float = 0.0,
    restore_best: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    options: ModelOptions | None = None,
    dp_delta: float = 1e-5,
    dp_accountant: str = "rdp",
    **model_options: Any,
) -> tuple[TrainState, list[Record]]:
    """Train an MLP and return ``(state, history)``.

    Args:
        key: PRNG key (``jax.random.key(seed)``) for the initial parameters, the shuffling order
            and dropout; not with ``state``.
        layer_sizes: e.g. ``(784, 256, 10)``; with ``state`` it may be given, and must match.
        x_train: (n, features) floating images (in the parameters' dtype). Images that look
            like raw 0-255 pixels get a warning.
        y_train: (n,) integer labels.
        optimizer: an optax optimizer, e.g. ``jaxmlp.optimizer("adam", 1e-3)``; with ``state``
            only the state's own optimizer object is accepted.
        epochs: passes over the data in this call.
        batch_size: examples per step.
        validation_data: optional ``(x, y)`` scored after every epoch.
        init: passed to [`jaxmlp.init_mlp`][] for a new state.
        init_scale: passed to [`jaxmlp.init_mlp`][] for a new state.
        dtype: passed to [`jaxmlp.init_mlp`][] for a new state.
        evaluate_train: also score the whole training set in evaluation mode after each epoch
            (``train_accuracy`` then is that exact figure instead of the running one).
        state: continue from this state (from [`jaxmlp.create_train_state`][], an earlier fit,
            or a checkpoint). It is not donated or modified: the caller's arrays stay valid.
        history: the records of the epochs already trained (as an earlier fit returned them);
            the new epochs are numbered after its last one, and the returned history includes it.
        on_epoch_end: called as ``on_epoch_end(state, record)`` after each epoch (checkpoints,
            logging); returning ``True`` stops training after that epoch.
        progress: called as ``progress(epoch, done_steps, total_steps)`` from inside the
            compiled epoch, about 50 times per epoch (progress bars).
        on_step: ``on_step(step, record)`` is called from inside the compiled epoch after
            every optimizer step whose global number ``step`` (1-based, counted over all epochs
            and calls, as ``state.step``) is a multiple of ``log_every_steps``, with
            ``record = {"epoch", "step_loss", "step_accuracy"}``: that batch's mean training loss
            and its accuracy (with dropout, before the update), e.g.
            ``on_step=logger.on_step`` of a [`jaxmlp.loggers.TensorBoardLogger`][]. It reads
            values the step computes anyway: no number changes, and the epoch compiles once.
        log_every_steps: how often ``on_step`` is called, in optimizer steps.
        early_stopping_patience: stop after this many epochs in a row without an improvement of
            ``monitor`` on the best epoch so far (see [`best_epoch`][jaxmlp.best_epoch]); None
            trains all ``epochs``. The count continues from ``history``: a history that already ends
            ``early_stopping_patience`` epochs after its best trains nothing more. Needs
            ``validation_data``.
        monitor: what the best epoch is chosen by, ``"validation_accuracy"`` (highest) or
            ``"validation_loss"`` (lowest) (see [`best_epoch`][jaxmlp.best_epoch]).
        min_delta: the smallest change of ``monitor`` that counts as an improvement.
        restore_best: return the state after this call's best epoch instead of the last one
            (Keras' ``restore_best_weights``); it is kept in memory, one extra copy of the state.
            Only the epochs trained in this call are candidates (the states of ``history``'s epochs
            are not at hand). Needs ``validation_data``.
        mesh: train data-parallel over this mesh's ``data`` axis (see [`jaxmlp.sharding`][]):
            the state and the data are replicated on its devices and each batch is split across
            them; ``batch_size`` must be a multiple of the device count.
        options: a [`ModelOptions`][jaxmlp.ModelOptions] for a new state; or give its fields as
            keywords:
        **model_options: fields of [`ModelOptions`][jaxmlp.ModelOptions] (``activation``, ``l2``,
            ``dropout_rate``, ``output``, ``dp_clip_norm``, ...). With ``state`` they may be given
            and must match the state's.
        dp_delta: for DP-SGD with noise (``dp_noise_multiplier > 0``), each record gets
            ``epsilon``: the privacy spent so far at ``dp_delta``, by ``dp_accountant``, counted
            from the state's step, so a continued state keeps counting. The sampling rate is
            batch_size / n.
        dp_accountant: ``"rdp"`` or ``"pld"`` (see [`jaxmlp.privacy`][]).

    Returns:
        The final state (with ``restore_best``: the best epoch's) and one record per epoch:
        ``epoch``, ``loss`` (mean training loss), ``train_accuracy``, ``seconds`` (wall time of
        the epoch's training program; the first epoch of a call includes the compile, also given
        as ``compile_seconds``), and ``validation_loss`` / ``validation_accuracy`` with
        validation data, and ``epsilon`` for DP-SGD. (The training loss and accuracy are
        computed on the private data and are not themselves private.) Fewer than ``epochs``
        records are added when early stopping, or ``on_epoch_end``, stopped training;
        ``best_epoch(history, monitor=...)`` says which epoch was the best.

    Raises:
        DivergenceError: a loss or gradient became non-finite; its ``state`` is the last good one
            and its ``history`` the records before it.

    Examples:
        >>> import jax, jaxmlp
        >>> x = jax.random.normal(jax.random.key(1), (64, 4))
        >>> y = (x[:, 0] > 0).astype("int32")
        >>> state, history = jaxmlp.fit(jax.random.key(0), (4, 8, 2), x, y,
        ...                             optimizer=jaxmlp.optimizer("adam", 1e-2),
        ...                             epochs=2, batch_size=16)
        >>> len(history), int(state.step), sorted(history[-1])
        (2, 8, ['epoch', 'loss', 'seconds', 'train_accuracy'])
    """
    epochs = _validation.check_positive_int("epochs", epochs)
    state = _state_for(
        state,
        key,
        layer_sizes,
        optimizer,
        options,
        model_options,
        {"init": init, "init_scale": init_scale, "dtype": dtype},
    )
    history = _check_history(history)
    epsilon = _accountant(state.options, dp_delta, dp_accountant)
    if epsilon is not None and plateau_scale(state.opt_state) is not None:
        raise ValueError(
            "the optimizer holds a reduce_on_plateau, which lowers the learning rate on the "
            "training loss of the private batches; DP-SGD does not make that loss private, so "
            "the privacy spent would be more than the epsilon reported: use a fixed schedule"
        )
    if x_train is None or y_train is None:
        raise TypeError("fit needs the training data x_train and y_train")
    x_train, y_train, batch_size = check_epoch_arguments(
        state, x_train, y_train, batch_size, mesh, names=("x_train", "y_train")
    )
    if validation_data is not None:
        validation_data = _validation.check_dataset(
            state.params, *validation_data, "validation images", "validation labels"
        )
    monitor, min_delta = _check_stopping(
        monitor, early_stopping_patience, min_delta, restore_best, validation_data
    )
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a function on_step(step, record), got {on_step!r}")
    log_every_steps = _validation.check_positive_int("log_every_steps", log_every_steps)

    def patience_spent() -> bool:
        return early_stopping_patience is not None and should_stop(
            history, patience=early_stopping_patience, monitor=monitor, min_delta=min_delta
        )

    if patience_spent():
        return state, history
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        # The casts here and below: jax types neither device_put's nor a compiled program's
        # outputs (they have the structure of the inputs and of the traced function's outputs).
        placed = jax.device_put((state, x_train, y_train), replicated)
        state, x_train, y_train = cast(tuple[TrainState, jax.Array, jax.Array], placed)

    first_epoch = history[-1]["epoch"] + 1 if history else 1
    current = {"epoch": first_epoch}
    hook = None
    if progress is not None:

        def progress_hook(done, total):
            progress(current["epoch"], int(done), int(total))

        hook = progress_hook

    step_hook = None
    if on_step is not None:

        def on_step_hook(step, loss, accuracy):
            record = {
                "epoch": current["epoch"],
                "step_loss": float(loss),
                "step_accuracy": float(accuracy),
            }
            on_step(int(step), record)

        step_hook = on_step_hook

    steps = steps_per_epoch(x_train.shape[0], batch_size, state.options.batch_sampling)
    start = time.perf_counter()
    compiled = epoch_program.lower(
        state,
        x_train,
        y_train,
        batch_size,
        hook,
        max(1, steps // 50),
        mesh,
        step_hook,
        log_every_steps,
    ).compile()
    compile_seconds = time.perf_counter() - start
    best_state, earlier = state, len(history)
    for epoch in range(first_epoch, first_epoch + epochs):
        current["epoch"] = epoch
        start = time.perf_counter()
        before = state  # not donated: the fallback after a divergence
        state, metrics = cast(tuple[TrainState, Any], compiled(state, x_train, y_train))
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        _raise_if_diverged(metrics, epoch, before, history)
        record: Record = {
            "epoch": epoch,
            "loss": float(metrics["loss"]),
            "train_accuracy": float(metrics["train_accuracy"]),
            "seconds": seconds + (compile_seconds if epoch == first_epoch else 0.0),
        }
        if epoch == first_epoch:
            record["compile_seconds"] = compile_seconds
        if epsilon is not None:
            record["epsilon"] = epsilon(int(state.step), batch_size / x_train.shape[0])
        record.update(_scores(state, x_train, y_train, evaluate_train, validation_data))
        history.append(record)
        if restore_best and epoch == best_epoch(
            history[earlier:], monitor=monitor, min_delta=min_delta
        ):
            best_state = state
        if on_epoch_end is not None and on_epoch_end(state, record) is True:
            break
        if patience_spent():
            break
    return (best_state if restore_best else state), history


def _raise_if_diverged(metrics, epoch: int, before: TrainState, history: list[Record]) -> None:
    """A [`DivergenceError`][jaxmlp.DivergenceError] for an epoch whose metrics name a non-finite
    step; ``before`` is the state from the start of that epoch."""
    if metrics["diverged_at_step"] < 0:
        return
    step = int(metrics["diverged_at_step"]) + 1
    raise DivergenceError(
        f"non-finite loss or gradient at epoch {epoch}, step {step}; try a lower learning rate",
        before,
        epoch,
        step,
        history,
    )


def _accountant(options: ModelOptions, dp_delta, dp_accountant):
    """``epsilon(steps, sampling_rate)`` at ``dp_delta`` for options with a privacy guarantee
    (clipping and noise), else None; the accounting arguments are checked either way."""
    if not options.is_private:
        return None
    from jaxmlp import privacy

    privacy.check_delta(dp_delta)
    _validation.check_choice("dp_accountant", dp_accountant, privacy.ACCOUNTANTS)

    def epsilon(steps: int, sampling_rate: float) -> float:
        return privacy.epsilon(
            noise_multiplier=options.dp_noise_multiplier,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=dp_delta,
            accountant=dp_accountant,
        )

    return epsilon


def _scores(state, x_train, y_train, evaluate_train: bool, validation_data) -> Record:
    """The exact scores an epoch's record gets after training: the whole training set's
    accuracy (``evaluate_train``) and the validation loss and accuracy."""
    scores: Record = {}
    if evaluate_train:
        scores["train_accuracy"] = evaluate(state, x_train, y_train)["accuracy"]
    if validation_data is not None:
        validation = evaluate(state, *validation_data)
        scores["validation_loss"] = validation["loss"]
        scores["validation_accuracy"] = validation["accuracy"]
    return scores
