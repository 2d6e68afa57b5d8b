"""What MNIST and Fashion-MNIST are: their official files, checksums, classes and mirrors.

Dataset facts are declarative data here (as in tensorflow-datasets' ``mnist.py``); the other
modules only say how to find, verify and read them. The checksums are the ones
tensorflow-datasets registers for the official gzip files; the content and payload checksums
pin the decompressed IDX bytes and the array bytes after the IDX header.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from jaxmlp.data._idx import IMAGES_MAGIC, LABELS_MAGIC

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

# The pixel normalisations of jaxmlp.data.normalization: the one list of them.
NORMALIZATIONS = ("unit", "standard", "symmetric", "none")

# The four files of every dataset, in the order they are listed and checked.
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


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
        """The IDX magic number the file must have."""
        return IMAGES_MAGIC if len(self.shape) == 3 else LABELS_MAGIC


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its four files, class names, pixel statistics and official mirrors.

    Attributes:
        name: ``"mnist"`` or ``"fashion_mnist"`` (also the data-root folder and tfds name).
        files: keys ``"train_images"``, ``"train_labels"``, ``"test_images"``, ``"test_labels"``.
        class_names: label ``i`` is ``class_names[i]``.
        mean: training-set pixel mean on the [0, 1] scale (for ``"standard"``).
        std: training-set pixel standard deviation on the [0, 1] scale.
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


# The four official files: the same names and shapes in both datasets.
_LAYOUT = {
    "train_images": ("train-images-idx3-ubyte.gz", (60000, IMAGE_SIDE, IMAGE_SIDE)),
    "train_labels": ("train-labels-idx1-ubyte.gz", (60000,)),
    "test_images": ("t10k-images-idx3-ubyte.gz", (10000, IMAGE_SIDE, IMAGE_SIDE)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", (10000,)),
}

# What differs per file, in the order of FileSpec: sha256 and bytes of the official gzip file,
# sha256 of its IDX content and of the array bytes after the IDX header, and its gzip MTIME.
_CHECKSUMS = {
    "mnist": {
        "train_images": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            0x3290827A,
        ),
        "train_labels": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            0x32908286,
        ),
        "test_images": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            0x34CCA6AD,
        ),
        "test_labels": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
            0x34CCA6C4,
        ),
    },
    "fashion_mnist": {
        "train_images": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            0x59A7E9DE,
        ),
        "train_labels": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            0x59A7E9DE,
        ),
        "test_images": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            0x59A7E9F3,
        ),
        "test_labels": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
            0x59A7E9F3,
        ),
    },
}


def _files(dataset: str) -> dict[str, FileSpec]:
    """The four [`FileSpec`][jaxmlp.data.FileSpec] of ``dataset``: the shared layout and its
    checksums. The IDX content is a 4-byte magic, one uint32 per dimension, then one byte per
    element."""
    files = {}
    for key, (filename, shape) in _LAYOUT.items():
        sha256, size, content_sha256, payload_sha256, mtime = _CHECKSUMS[dataset][key]
        content_size = 4 * (1 + len(shape)) + math.prod(shape)
        files[key] = FileSpec(
            filename, sha256, size, content_sha256, content_size, payload_sha256, shape, mtime
        )
    return files


DATASETS: Mapping[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files=_files("mnist"),
        class_names=tuple(str(i) for i in range(NUM_CLASSES)),
        # The customary values (PyTorch examples); exact: 0.130660, 0.308108.
        mean=0.1307,
        std=0.3081,
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        tfds_name="mnist",
    ),
    # Fashion-MNIST is MNIST's layout with its own files, classes, statistics and mirror.
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        files=_files("fashion_mnist"),
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


def dataset_spec(name: str) -> DatasetSpec:
    """The [`DatasetSpec`][jaxmlp.data.DatasetSpec] of ``name``.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: no such dataset (the message lists the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
