"""The errors of [`jaxmlp.data`][]: one base class, one subclass per way of failing."""

from __future__ import annotations


class DataError(Exception):
    """Base class of every error raised by [`jaxmlp.data`][]."""


class FormatError(DataError, ValueError):
    """A file is not the IDX file expected (bad gzip, magic number, shape or size)."""


class ChecksumError(DataError, ValueError):
    """A file's sha256 differs from the official one."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No usable source for a dataset (the message says where it looked and what to do)."""


class CacheError(DataError, OSError):
    """The cache directory cannot be created or written."""


class FetchError(DataError):
    """[`fetch`][jaxmlp.data.fetch] could not obtain verified files from any route."""


class CacheWarning(UserWarning):
    """Decoded arrays could not be cached; loading still works, only slower next time."""
