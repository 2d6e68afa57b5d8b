"""What a training step computes besides the parameters: one frozen dataclass."""

from __future__ import annotations

import dataclasses
import functools

from jaxmlp import _validation
from jaxmlp._schema import option
from jaxmlp.losses import OUTPUTS, LossOptions
from jaxmlp.model import ACTIVATIONS

GRADIENTS = ("autodiff", "backprop")
"""How a step differentiates the loss: ``jax.value_and_grad``, or the hand-derived backward
pass of [`jaxmlp.backprop`][jaxmlp.backprop.backprop]."""

BATCH_SAMPLINGS = ("shuffle", "poisson")
"""How an epoch draws its batches: a shuffled order, or Poisson sampling (DP-SGD's)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Everything besides the parameters that decides what a training step computes.

    A train state carries its options (a static field), so the compiled step and
    [`jaxmlp.evaluate`][] of a state always agree with how it was trained. The same fields are
    the options of ``jaxmlp train`` (``dropout_rate`` is ``--dropout-rate``) and the keys of its
    config files.

    Attributes:
        activation: hidden nonlinearity (``relu``, ``sigmoid``, ``tanh``, ``identity``).
        output: ``softmax`` (cross-entropy) or ``sigmoid`` (logistic cost over one-hot targets).
        l2: coefficient of ``0.5 * sum(w**2)`` added to the mean batch loss.
        dropout_rate: inverted dropout on every hidden layer's output, training only.
        input_dropout_rate: inverted dropout on the input pixels, training only.
        max_norm: if set, after each update every unit's incoming weight vector (a column of w)
            is rescaled to an L2 norm of at most ``max_norm`` (Srivastava et al. 2014).
        augment_shift: if > 0, each training image (square, e.g. 28 x 28) is translated by a
            random whole number of pixels in [-augment_shift, augment_shift] along each axis,
            inside the compiled step, filling with the edge pixels.
        augment_rotate: if > 0, each training image is also rotated by a random angle in
            [-augment_rotate, augment_rotate] degrees about its centre (bilinear interpolation,
            edge-filled), inside the compiled step.
        augment_scale: if > 0, each training image is also zoomed by a random factor in
            [1 - augment_scale, 1 + augment_scale] about its centre. With a rotation or a zoom the
            shift of ``augment_shift`` is applied in the same resampling.
        adversarial_epsilon: if > 0, adversarial training with the fast gradient sign method
            (Goodfellow et al. 2015): each step also scores the batch moved by
            ``adversarial_epsilon * sign(grad_x loss)`` (the same dropout mask) and descends
            ``(1 - adversarial_weight) * loss(x) + adversarial_weight * loss(x_adv)``. Inputs are
            not clipped, so epsilon is in the units of the inputs (``/255`` pixels: 0.1 is 25.5
            grey levels). A regulariser, not augmentation: no prior on images is used. Needs
            ``gradient="autodiff"``; a step costs about twice as much.
        adversarial_weight: the weight of the adversarial term, in (0, 1]; 0.5 as in the paper.
        vat_epsilon: if > 0, virtual adversarial training (Miyato et al. 2016): each step adds
            ``vat_weight * KL(p(x) || p(x + r))`` to the loss, where ``p`` is the model's softmax
            under the step's dropout masks, the clean ``p(x)`` is held fixed, and ``r`` (L2 norm
            ``vat_epsilon`` per example, in input units) is the direction that raises the KL most,
            found by one power iteration from a random start. It uses no labels and no prior on
            images: a smoothness regulariser, not augmentation. Needs ``gradient="autodiff"`` and
            ``output="softmax"``; a step costs about 2.5 times as much (two more forward and
            backward passes, one of them to the inputs only).
        vat_weight: the weight of the virtual adversarial term (> 0; 1.0 as in the paper).
        gradient: ``autodiff`` (``jax.value_and_grad`` of the loss) or ``backprop`` (the
            hand-derived backward pass); they agree to rounding.
        dp_clip_norm: if set, differentially private SGD (Abadi et al. 2016): each example's
            gradient of its data loss is clipped to global L2 norm ``dp_clip_norm`` (C) over all
            weights and biases, the clipped gradients are summed, Gaussian noise N(0, sigma^2 C^2)
            is added to every entry, and the sum is divided by the batch size; the L2 term is added
            after, unclipped. With ``gradient="backprop"`` the clipped sum comes from the
            hand-derived norms and one reweighted product per layer (no per-example gradient is
            materialised, see [`jaxmlp.per_example`][]); with ``"autodiff"`` from
            ``jax.vmap(jax.grad)``.
        dp_noise_multiplier: sigma, the noise's standard deviation in units of C (needs
            ``dp_clip_norm``). 0 clips without noise (no privacy guarantee).
        batch_sampling: ``shuffle``: each epoch a shuffled order cut into batches of
            ``batch_size`` (every example once); ``poisson``: each step takes every example
            independently with probability batch_size / n (the sampling the privacy accounting of
            [`jaxmlp.privacy`][] assumes), padded to a fixed maximum size and masked so that the
            shapes stay static, for round(n / batch_size) steps an epoch. The DP gradient is divided
            by the batch's size in ``shuffle`` mode and by ``batch_size`` (the expected size) in
            ``poisson`` mode.
    """

    activation: str = option("relu", "hidden activation", group="model", choices=tuple(ACTIVATIONS))
    output: str = option(
        "softmax",
        "output layer and loss: softmax + cross-entropy, or sigmoid + logistic cost",
        group="model",
        choices=OUTPUTS,
    )
    l2: float = option(
        0.0, "coefficient of 0.5 * sum(w^2) added to the loss", group="reg", metavar="LAMBDA"
    )
    dropout_rate: float = option(
        0.0,
        "dropout rate of each hidden layer's output",
        group="reg",
        metavar="RATE",
    )
    input_dropout_rate: float = option(
        0.0,
        "dropout rate of the input pixels",
        group="reg",
        metavar="RATE",
    )
    max_norm: float | None = option(
        None, "cap on each unit's incoming weight norm", group="reg", metavar="C"
    )
    augment_shift: int = option(
        0,
        "random translation of training images by up to this many pixels",
        group="reg",
        metavar="PIXELS",
    )
    augment_rotate: float = option(
        0.0,
        "random rotation of training images by up to this many degrees",
        group="reg",
        metavar="DEGREES",
    )
    augment_scale: float = option(
        0.0,
        "random zoom of training images by a factor in [1 - S, 1 + S]",
        group="reg",
        metavar="S",
    )
    adversarial_epsilon: float = option(
        0.0,
        "adversarial training: also train on inputs moved by EPS * sign(input gradient)",
        group="reg",
        metavar="EPS",
    )
    adversarial_weight: float = option(
        0.5, "weight of the adversarial loss, in (0, 1]", group="reg", metavar="W"
    )
    vat_epsilon: float = option(
        0.0,
        "virtual adversarial training: L2 radius of the perturbation (e.g. 2.0 for /255 pixels)",
        group="reg",
        metavar="EPS",
    )
    vat_weight: float = option(
        1.0, "weight of the virtual adversarial loss", group="reg", metavar="W"
    )
    gradient: str = option(
        "autodiff",
        "gradient: jax autodiff or the hand-derived backprop",
        group="opt",
        choices=GRADIENTS,
    )

    dp_clip_norm: float | None = option(
        None,
        "DP-SGD: clip each example's gradient to this global L2 norm (C)",
        group="privacy",
        metavar="C",
    )
    dp_noise_multiplier: float = option(
        0.0,
        "DP-SGD: Gaussian noise of standard deviation SIGMA * C on the clipped sum",
        group="privacy",
        metavar="SIGMA",
    )
    batch_sampling: str = option(
        "shuffle",
        "batches: a shuffled order (every example once an epoch), or Poisson sampling",
        group="privacy",
        choices=BATCH_SAMPLINGS,
    )

    def __post_init__(self):
        self.loss  # noqa: B018 (builds and so checks the loss's options, once)
        if self.max_norm is not None:
            _validation.check_positive("max_norm", self.max_norm)
        if (
            isinstance(self.augment_shift, bool)
            or not isinstance(self.augment_shift, int)
            or (self.augment_shift < 0)
        ):
            raise ValueError(
                f"augment_shift={self.augment_shift!r} is invalid; expected an integer >= 0"
            )
        _validation.check_non_negative("augment_rotate", self.augment_rotate)
        if self.augment_rotate > 180:
            raise ValueError(
                f"augment_rotate={self.augment_rotate!r} is invalid; expected degrees in [0, 180]"
            )
        _validation.check_non_negative("augment_scale", self.augment_scale)
        if self.augment_scale >= 1:
            raise ValueError(
                f"augment_scale={self.augment_scale!r} is invalid; expected a fraction in [0, 1)"
            )
        _validation.check_non_negative("adversarial_epsilon", self.adversarial_epsilon)
        _validation.check_non_negative("adversarial_weight", self.adversarial_weight)
        if not 0 < self.adversarial_weight <= 1:
            raise ValueError(
                f"adversarial_weight={self.adversarial_weight!r} is invalid; expected a weight "
                "in (0, 1]"
            )
        _validation.check_non_negative("vat_epsilon", self.vat_epsilon)
        _validation.check_positive("vat_weight", self.vat_weight)
        _validation.check_choice("gradient", self.gradient, GRADIENTS)
        for name in ("adversarial_epsilon", "vat_epsilon"):
            if getattr(self, name) and self.gradient != "autodiff":
                raise ValueError(
                    f"{name}={getattr(self, name)!r} needs gradient='autodiff' (the input "
                    f"gradient comes from jax.grad); got gradient={self.gradient!r}"
                )
        if self.vat_epsilon and self.output != "softmax":
            raise ValueError(
                f"vat_epsilon={self.vat_epsilon!r} needs output='softmax' (it compares softmax "
                f"distributions); got output={self.output!r}"
            )

        if self.dp_clip_norm is not None:
            _validation.check_positive("dp_clip_norm", self.dp_clip_norm)
        _validation.check_non_negative("dp_noise_multiplier", self.dp_noise_multiplier)
        if self.dp_noise_multiplier and self.dp_clip_norm is None:
            raise ValueError(
                f"dp_noise_multiplier={self.dp_noise_multiplier!r} needs dp_clip_norm: the noise "
                "is in units of the clipping bound C, which bounds each example's contribution"
            )
        if self.dp_clip_norm is not None:
            for name in ("adversarial_epsilon", "vat_epsilon"):
                if getattr(self, name):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} cannot be combined with dp_clip_norm: "
                        "DP-SGD clips each example's gradient of its own loss, and these terms "
                        "are not sums of per-example losses jaxmlp differentiates per example"
                    )
        _validation.check_choice("batch_sampling", self.batch_sampling, BATCH_SAMPLINGS)

    @functools.cached_property
    def loss(self) -> LossOptions:
        """The options of the loss a step differentiates (activation, output, l2, dropout
        rates), as the core functions take them; built and checked once."""
        return LossOptions(
            activation=self.activation,
            output=self.output,
            l2=self.l2,
            dropout_rate=self.dropout_rate,
            input_dropout_rate=self.input_dropout_rate,
        )

    @property
    def clips_gradients(self) -> bool:
        """Whether steps are DP-SGD steps: each example's gradient clipped to ``dp_clip_norm``
        (with noise added when ``dp_noise_multiplier > 0``)."""
        return self.dp_clip_norm is not None

    @property
    def is_private(self) -> bool:
        """Whether training has a privacy guarantee, and so an epsilon: clipping and noise."""
        return self.dp_clip_norm is not None and self.dp_noise_multiplier > 0

    @property
    def augments(self) -> bool:
        """Whether training images are transformed at random inside the step."""
        return bool(self.augment_shift or self.augment_rotate or self.augment_scale)

    @property
    def uses_dropout(self) -> bool:
        """Whether a training step drops units (hidden or input)."""
        return not (
            _validation.is_static_zero(self.dropout_rate)
            and _validation.is_static_zero(self.input_dropout_rate)
        )

    @property
    def needs_key(self) -> bool:
        """Whether a step draws random numbers (dropout, augmentation, VAT's random start);
        keys cost time per step, so a step without randomness draws none."""
        return bool(
            self.augments or self.uses_dropout or self.vat_epsilon or self.dp_noise_multiplier
        )


def model_option_names() -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(ModelOptions))
