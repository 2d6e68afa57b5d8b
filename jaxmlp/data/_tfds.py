"""tensorflow-datasets as a source: reading a prepared build (no TensorFlow needed) and
preparing one offline from the official files ([`prepare_tfds`][jaxmlp.data.prepare_tfds], needs
TensorFlow).

tensorflow-datasets is imported only when a build is read or prepared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp.data._errors import DataError, DataNotFoundError
from jaxmlp.data._specs import DATASETS, FILE_KEYS, IMAGE_SIDE, dataset_spec
from jaxmlp.data._store import data_roots, sha256


def tfds_arrays(name: str, data_dir: str | os.PathLike[str] | None) -> dict[str, np.ndarray]:
    """uint8 arrays from a prepared tfds dataset (tfds's stored order); no TensorFlow needed.

    Returns:
        ``{"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": ...,
        "test_labels": ...}``, all uint8.

    Raises:
        DataNotFoundError: tensorflow-datasets is missing or the dataset is not prepared in
            ``data_dir`` (default: tfds's default data dir).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataNotFoundError(f"source='tfds' needs tensorflow-datasets ({e})") from e
    tfds_name = DATASETS[name].tfds_name
    kwargs: dict[str, Any] = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
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


def tfds_prepared(name: str, data_dir: str | os.PathLike[str] | None) -> bool:
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

    Raises:
        DataNotFoundError: no ``manual_dir`` given and no data root holds all four official
            ``.gz`` files in one folder.
    """
    spec = dataset_spec(name)
    if manual_dir is None:
        folders = {p.parent for p in _verified_gz_paths(name)}
        if len(folders) != 1:
            raise DataNotFoundError(
                f"prepare_tfds({name!r}) needs the four official .gz files in one folder; "
                f"found {sorted(map(str, folders)) or 'none'} in {data_roots()}"
            )
        manual_dir = folders.pop()
    import tensorflow_datasets as tfds

    kwargs: dict[str, Any] = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
    builder = tfds.builder(spec.tfds_name, file_format="array_record", **kwargs)
    if download_dir is None:
        download_dir = Path(builder.data_dir_root) / "downloads" / f"jaxmlp-{spec.tfds_name}"
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    builder.download_and_prepare(download_dir=os.fspath(download_dir), download_config=config)
    return Path(builder.data_dir)


def _verified_gz_paths(name: str) -> list[Path]:
    """The four official ``.gz`` files of ``name`` (each the first verified copy in the data
    roots), or none when some file has no such copy."""
    out = []
    for key in FILE_KEYS:
        spec = DATASETS[name].files[key]
        for root in data_roots():
            p = root / name / spec.filename
            if p.is_file() and sha256(p.read_bytes()) == spec.sha256:
                out.append(p)
                break
    return out if len(out) == len(FILE_KEYS) else []
