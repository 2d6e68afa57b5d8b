"""Where the official files are kept and how they are checked: data roots, the user cache,
verification, [`status`][jaxmlp.data.status], the decoded ``.npy`` cache and writing a file.

A *data root* holds one folder per dataset with the official file names, e.g.
``<root>/mnist/train-images-idx3-ubyte.gz``. A file counts only after its sha256 matched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Literal

import numpy as np

from jaxmlp._files import atomic_write
from jaxmlp.data._errors import CacheError, CacheWarning, ChecksumError, DataError, FormatError
from jaxmlp.data._idx import describe_idx, gunzip, parse_idx
from jaxmlp.data._specs import DATASETS, FILE_KEYS, FileSpec, dataset_spec

# --------------------------------------------------------------------------------------------
# Places


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/jaxmlp``, else ``~/.cache/jaxmlp``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "jaxmlp"


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


def candidates(root: Path, dataset: str, spec: FileSpec) -> Iterator[Path]:
    """The copies of one official file in one root: the ``.gz`` name, then the uncompressed."""
    folder = root / dataset
    for fname in (spec.filename, spec.raw_filename):
        p = folder / fname
        if p.is_file():
            yield p


def locate(dataset: str, key: str, roots: Sequence[Path]) -> Path | None:
    """First candidate file for ``key`` in ``roots``; not read.

    The first file found is the one used: a damaged file is reported, never silently skipped
    in favour of one further down the search order.
    """
    spec = DATASETS[dataset].files[key]
    return next((p for r in roots for p in candidates(r, dataset, spec)), None)


# --------------------------------------------------------------------------------------------
# Verification


def sha256(data: bytes | memoryview) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify_bytes(raw: bytes, path: Path, spec: FileSpec, *, want_content: bool) -> bytes | None:
    """Checks one file's bytes; returns its decompressed content when ``want_content``.

    Accepts the official gzip bytes, or any file whose (decompressed) content has the official
    content sha256: the gzip wrapper (name, mtime) differs between redistributions.

    Raises:
        ChecksumError: neither the bytes nor their content are the official ones.
    """
    if path.suffix == ".gz":
        if len(raw) == spec.size and sha256(raw) == spec.sha256:
            return gunzip(raw, path) if want_content else None
        try:
            content = gunzip(raw, path)
        except FormatError as e:
            raise ChecksumError(
                f"{path}: sha256 {sha256(raw)} ({len(raw)} bytes), expected the official "
                f"{spec.filename}: sha256 {spec.sha256} ({spec.size} bytes); and {e}"
            ) from None
    else:
        content = raw
    got = sha256(content)
    if got != spec.content_sha256:
        raise ChecksumError(
            f"{path}: content sha256 {got} ({len(content)} bytes uncompressed; "
            f"{describe_idx(content)}), expected the official {spec.raw_filename}: content "
            f"sha256 {spec.content_sha256} ({spec.content_size} bytes; "
            f"gzip sha256 {spec.sha256}, shape {spec.shape})"
        )
    return content


def verify_file(path: Path, spec: FileSpec, *, want_content: bool) -> bytes | None:
    """`verify_bytes` of a file; an unreadable file is a [`DataError`][jaxmlp.data.DataError]."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    return verify_bytes(raw, path, spec, want_content=want_content)


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


def status(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> list[FileStatus]:
    """Where each official file of ``name`` is found in the data roots, and whether it verifies.

    Hashing all four files takes about 0.05 s (MNIST); ``verify=False`` only checks presence.
    """
    ds = dataset_spec(name)
    out = []
    roots = data_roots(data_dir)
    for key in FILE_KEYS:
        spec = ds.files[key]
        found = locate(name, key, roots)
        if found is None:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, None, "missing"))
            continue
        if not verify:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "present"))
            continue
        try:
            verify_bytes(found.read_bytes(), found, spec, want_content=False)
        except (DataError, OSError) as e:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "bad", str(e)))
        else:
            out.append(FileStatus(name, key, spec.filename, spec.sha256, found, "verified"))
    return out


# --------------------------------------------------------------------------------------------
# Writing


def write_file(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Creates or replaces one file of a data root or the cache through
    `jaxmlp._files.atomic_write` (``write`` is called with the open binary file).

    Raises:
        CacheError: the folder cannot be created or written (no partial file is left, an older
            file is intact); the message asks for a writable cache directory when the folder
            is not one.
    """
    try:
        atomic_write(path, write)
    except OSError as e:
        folder = path.parent
        hint = (
            ""
            if folder.is_dir() and os.access(folder, os.W_OK)
            else "; expected a writable cache directory (set XDG_CACHE_HOME or pass a writable "
            "directory)"
        )
        raise CacheError(f"cannot write {path}: {e}{hint}") from e


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
    if sha256(memoryview(arr).cast("B")) != spec.payload_sha256:
        return None
    return arr


def _write_decoded(path: Path, arr: np.ndarray) -> None:
    try:
        write_file(path, lambda f: np.save(f, arr, allow_pickle=False))
    except CacheError as e:
        warnings.warn(f"decoded arrays not cached: {e}", CacheWarning, stacklevel=4)


def verified_arrays(
    name: str, roots: Sequence[Path], use_cache: bool
) -> tuple[dict[str, np.ndarray], Path] | None:
    """The four verified uint8 arrays of ``name`` and their folder, or None when some file is in
    no root.

    Each source file is hashed on every call; its decoded array comes from the ``.npy`` cache
    when ``use_cache`` and the cached payload still has the official sha256.

    Raises:
        ChecksumError, FormatError: a file is found but is not the official one (also when
            other files are missing: a damaged file is the more useful news).
    """
    ds = DATASETS[name]
    paths = {key: locate(name, key, roots) for key in FILE_KEYS}
    if any(p is None for p in paths.values()):
        for key, p in paths.items():
            if p is not None:
                verify_file(p, ds.files[key], want_content=False)
        return None
    arrays: dict[str, np.ndarray] = {}
    for key, path in paths.items():
        assert path is not None
        spec = ds.files[key]
        decoded = _decoded_path(name, spec)
        cached = _read_decoded(decoded, spec) if use_cache and decoded.is_file() else None
        content = verify_file(path, spec, want_content=cached is None)
        if cached is not None:
            arrays[key] = cached
            continue
        assert content is not None
        arrays[key] = parse_idx(content, path, expected_magic=spec.magic, expected_shape=spec.shape)
        if use_cache:
            _write_decoded(decoded, arrays[key])
    return arrays, paths["train_images"].parent  # type: ignore[union-attr]
