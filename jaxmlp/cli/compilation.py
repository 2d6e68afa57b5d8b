"""The persistent compilation cache of the command: a second identical run loads its compiled
programs from disk instead of compiling them again.

``jaxmlp train``, ``evaluate``, ``predict`` and ``export`` keep JAX's persistent compilation
cache in the user cache directory (``$XDG_CACHE_HOME/jaxmlp/xla``, else ``~/.cache/jaxmlp/xla``).
The environment variable ``JAXMLP_COMPILATION_CACHE`` moves it (a directory) or turns it off
(``0``, ``off``, ``no`` or ``false``), as does the flag ``--no-compilation-cache``. A cache
directory the user already gave JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is.
The library never turns the cache on: that is the caller's choice (see JAX's "Persistent
compilation cache" guide); like JAX, jaxmlp treats the cache as trusted, so keep it private.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "JAXMLP_COMPILATION_CACHE"
_OFF = ("0", "off", "no", "false")


def cache_location(enabled: bool = True) -> Path | None:
    """Where the command keeps compiled programs, or None when the cache is off."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not enabled or setting.lower() in _OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    from jaxmlp.data import cache_dir

    return cache_dir() / "xla"


def use_compilation_cache(enabled: bool = True) -> Path | None:
    """Turn JAX's persistent compilation cache on at
    [`cache_location`][jaxmlp.cli.compilation.cache_location] (before anything compiles); returns
    the directory in use, or None. Every program is cached, however quick its compile: an epoch's
    compile is seconds on a CPU, the evaluation's a fraction of one."""
    import jax

    # jax's Config defines its flags as attributes at run time, out of a type checker's sight.
    own = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    if own:
        return Path(own)
    location = cache_location(enabled)
    if location is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(location))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return location
