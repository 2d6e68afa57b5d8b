"""Privacy accounting of DP-SGD, through Google's ``dp-accounting`` library.

DP-SGD (Abadi et al. 2016) releases, at every step, the sum of the clipped per-example
gradients of a random batch plus Gaussian noise of standard deviation ``sigma * C``. Each step is
a subsampled Gaussian mechanism with noise multiplier ``sigma`` and sampling rate
``q = batch_size / n``; ``steps`` of them compose. The accounting here describes that as
``dp-accounting``'s ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)),
steps)`` and asks one of its accountants for the epsilon at a given delta:

- ``"rdp"``: Renyi DP (Mironov 2017), the moments accountant's successor; an upper bound.
- ``"pld"``: privacy loss distributions (Koskela et al., Meiser-Mohammadi); tighter.

The analysis assumes **Poisson sampling** (each example in each batch independently with
probability q): ``ModelOptions(batch_sampling="poisson")``. With shuffled fixed-size batches
(the default), the same numbers are the customary approximation (as in Abadi et al. and most
libraries), not a proof: say so when you report them.

    >>> round(epsilon(noise_multiplier=4.0, sampling_rate=0.01, steps=10_000, delta=1e-5), 3)
    1.035
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math

from jaxmlp import _validation

ACCOUNTANTS = ("rdp", "pld")


def _check(noise_multiplier, sampling_rate, steps, delta, accountant) -> None:
    if noise_multiplier is not None:
        _validation.check_positive("noise_multiplier", noise_multiplier)
    _validation.check_positive("sampling_rate", sampling_rate)
    if sampling_rate > 1:
        raise ValueError(f"sampling_rate={sampling_rate!r} is invalid; expected 0 < q <= 1")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} is invalid; expected an integer >= 0")
    check_delta(delta)
    _validation.check_choice("accountant", accountant, ACCOUNTANTS)


def check_delta(delta) -> float:
    """delta must lie in (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} is invalid; expected 0 < delta < 1 (e.g. 1e-5)")
    return float(delta)


@contextlib.contextmanager
def _quiet():
    """dp-accounting logs a warning (through absl) for every Renyi order it drops as numerically
    unstable, which happens at small noise multipliers; the epsilon is still correct (computed
    from the other orders), so those warnings are held back here."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _event(noise_multiplier: float, sampling_rate: float, steps: int):
    import dp_accounting

    step = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        step = dp_accounting.PoissonSampledDpEvent(sampling_rate, step)
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _accountant(name: str):
    from dp_accounting import pld, rdp

    return rdp.RdpAccountant() if name == "rdp" else pld.PLDAccountant()


def epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """The epsilon at ``delta`` of ``steps`` DP-SGD steps with noise multiplier sigma and
    sampling rate q = batch_size / n (0 after no step)."""
    _check(noise_multiplier, sampling_rate, steps, delta, accountant)
    if steps == 0:
        return 0.0
    with _quiet():
        result = _accountant(accountant).compose(_event(noise_multiplier, sampling_rate, steps))
        return float(result.get_epsilon(delta))


def noise_multiplier_for_epsilon(
    *,
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier sigma in [0.3, 1e4] whose ``steps`` steps at sampling
    rate q spend at most ``target_epsilon`` at ``delta`` (``dp_accounting``'s
    ``calibrate_dp_mechanism``, to 1e-4). Below 0.3 is not searched: the privacy loss
    distribution of so little noise needs gigabytes, and it protects nothing worth having.

    Raises:
        ValueError: the target cannot be met (even sigma = 1e4 spends more), or an argument is
            out of range.
    """
    _check(None, sampling_rate, steps, delta, accountant)
    _validation.check_positive("target_epsilon", target_epsilon)
    if steps == 0:
        raise ValueError("steps=0: no step spends privacy, so no noise multiplier is needed")
    import dp_accounting

    lowest, highest = 0.3, 1e4
    spent_with = functools.partial(
        epsilon, sampling_rate=sampling_rate, steps=steps, delta=delta, accountant=accountant
    )
    if spent_with(noise_multiplier=lowest) <= target_epsilon:
        return lowest
    spent = spent_with(noise_multiplier=highest)
    if not spent <= target_epsilon:
        raise ValueError(
            f"target_epsilon={target_epsilon!r} cannot be met: even noise multiplier {highest:g} "
            f"spends epsilon {spent:.4g} over {steps} steps at sampling rate {sampling_rate:g} "
            f"and delta {delta:g}; allow a larger epsilon or fewer steps"
        )
    with _quiet():
        sigma = dp_accounting.calibrate_dp_mechanism(
            lambda: _accountant(accountant),
            lambda sigma: _event(sigma, sampling_rate, steps),
            target_epsilon,
            delta,
            dp_accounting.ExplicitBracketInterval(lowest, highest),
            tol=1e-4,
        )
    if not math.isfinite(sigma):  # pragma: no cover - calibrate_dp_mechanism raises first
        raise ValueError(f"no noise multiplier found for target_epsilon={target_epsilon!r}")
    return float(sigma)
