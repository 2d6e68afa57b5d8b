"""Resident memory kept per checkpoint save, for jaxmlp's writer and for orbax's save paths.

    .venv/bin/python scripts/checkpoint_memory.py [DESIGN ...] [--saves N] [--history]

Each design runs in a process of its own: it builds the soak test's train state (784-16-10,
Adam), saves it N times (default 300) into a fresh directory keeping the 3 newest, and prints
one JSON line with the RSS after ``gc.collect()`` at save 50 and save N and the growth per save
between them (kB). ``--history`` adds a growing per-epoch history to each checkpoint's
metadata, as the CLI does (where the design has metadata). No design given: all of them.

The ``orbax-*`` designs need orbax-checkpoint, which jaxmlp does not depend on (these
measurements are why): ``pip install orbax-checkpoint`` to run them. Without it, only the
``jaxmlp`` and ``noop`` designs run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DESIGNS = {
    "jaxmlp": "jaxmlp.checkpoints.save: arrays.npz + meta.json in a temporary directory, renamed",
    "noop": "no write at all: the state's host copy and sha256 only (the floor)",
    "orbax-composite": "how an early jaxmlp wrote checkpoints: a new CheckpointManager per "
    "save, item handlers, Composite(state=StandardSave, meta=JsonSave)",
    "orbax-composite-state-only": "a new CheckpointManager per save with item handlers, "
    "Composite(state=StandardSave) only",
    "orbax-manager": "a new plain CheckpointManager per save, one StandardSave item",
    "orbax-manager-reused": "one plain CheckpointManager (max_to_keep=3), one StandardSave item",
    "orbax-standard-checkpointer": "one StandardCheckpointer reused, into a temporary directory",
    "orbax-standard-checkpointer-new": "a new StandardCheckpointer per save",
    "orbax-checkpointer-sync": "one synchronous Checkpointer(StandardCheckpointHandler()) reused",
    "orbax-pytree-checkpointer": "one PyTreeCheckpointer reused",
    "orbax-checkpointer-no-ocdbt": "one Checkpointer(StandardCheckpointHandler(use_ocdbt=False))",
}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(design: str, saves: int, with_history: bool) -> dict:
    import jax

    import jaxmlp
    from jaxmlp import checkpoints

    state = jaxmlp.create_train_state(
        jax.random.key(0), (784, 16, 10), jaxmlp.optimizer("adam", 1e-3)
    )
    arrays = checkpoints.state_arrays(state)
    root = Path(tempfile.mkdtemp(prefix="checkpoint-memory-"))
    history: list[dict] = []
    held: dict = {}

    if design.startswith("orbax-"):
        import orbax.checkpoint as ocp

        logging.getLogger("absl").setLevel(logging.ERROR)

    def prune(keep: int = 3) -> None:
        for step in sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())[:-keep]:
            shutil.rmtree(root / str(step))

    def manager(item_handlers=None, **options):
        return ocp.CheckpointManager(
            root,
            options=ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False, create=True, **options
            ),
            item_handlers=item_handlers,
        )

    def checkpointer():
        if design == "orbax-standard-checkpointer-new" or design not in held:
            held[design] = {
                "orbax-standard-checkpointer": ocp.StandardCheckpointer,
                "orbax-standard-checkpointer-new": ocp.StandardCheckpointer,
                "orbax-checkpointer-sync": lambda: ocp.Checkpointer(
                    ocp.StandardCheckpointHandler()
                ),
                "orbax-pytree-checkpointer": ocp.PyTreeCheckpointer,
                "orbax-checkpointer-no-ocdbt": lambda: ocp.Checkpointer(
                    ocp.StandardCheckpointHandler(use_ocdbt=False)
                ),
            }[design]()
        return held[design]

    def save(epoch: int) -> None:
        history.append({"epoch": epoch, "loss": 0.1, "train_accuracy": 0.9, "validation_loss": 0.2})
        meta = {"history": history} if with_history else {}
        if design == "jaxmlp":
            checkpoints.save(root, epoch, state, meta=meta, keep=3)
        elif design == "noop":
            checkpoints.checksum(jax.device_get(arrays))
        elif design == "orbax-composite":
            m = manager(
                {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
            )
            m.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            m.close()
            prune()
        elif design == "orbax-composite-state-only":
            m = manager({"state": ocp.StandardCheckpointHandler()})
            m.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays)), force=True)
            m.close()
            prune()
        elif design == "orbax-manager":
            m = manager()
            m.save(epoch, args=ocp.args.StandardSave(arrays), force=True)
            m.close()
            prune()
        elif design == "orbax-manager-reused":
            if "manager" not in held:
                held["manager"] = manager(max_to_keep=3)
            held["manager"].save(epoch, args=ocp.args.StandardSave(arrays), force=True)
            held["manager"].wait_until_finished()
        else:
            tmp = root / f".tmp-{epoch}"
            tmp.mkdir()
            c = checkpointer()
            c.save(tmp / "state", arrays)
            if hasattr(c, "wait_until_finished"):
                c.wait_until_finished()
            if design == "orbax-standard-checkpointer-new":
                c.close()
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.rename(tmp, root / str(epoch))
            prune()

    rss = {}
    began = time.perf_counter()
    for epoch in range(1, saves + 1):
        save(epoch)
        if epoch in (50, saves):
            gc.collect()
            rss[epoch] = rss_kib()
    seconds = time.perf_counter() - began
    shutil.rmtree(root)
    return {
        "design": design,
        "history": with_history,
        "saves": saves,
        "rss_mib_at_50": round(rss[50] / 1024, 1),
        f"rss_mib_at_{saves}": round(rss[saves] / 1024, 1),
        "kB_per_save": round((rss[saves] - rss[50]) * 1.024 / (saves - 50), 1),
        "ms_per_save": round(1000 * seconds / saves, 1),
    }


def has_orbax() -> bool:
    return importlib.util.find_spec("orbax") is not None and (
        importlib.util.find_spec("orbax.checkpoint") is not None
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("designs", nargs="*", metavar="DESIGN", help=", ".join(DESIGNS))
    parser.add_argument("--saves", type=int, default=300)
    parser.add_argument("--history", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [d for d in args.designs if d not in DESIGNS]
    if unknown:
        parser.error(f"unknown design {unknown[0]!r}; expected one of {', '.join(DESIGNS)}")
    designs = args.designs or list(DESIGNS)
    if not has_orbax():
        wanted = [d for d in args.designs if d.startswith("orbax-")]
        if wanted:
            parser.error(f"{wanted[0]} needs orbax-checkpoint: pip install orbax-checkpoint")
        print(
            "orbax-checkpoint is not installed: measuring jaxmlp and noop only (pip install "
            "orbax-checkpoint to compare with orbax's save paths)",
            file=sys.stderr,
        )
        designs = [d for d in designs if not d.startswith("orbax-")]
    if args.one:
        print(json.dumps(measure(designs[0], args.saves, args.history)), flush=True)
        return 0
    for design in designs:
        argv = [sys.executable, __file__, design, "--one", "--saves", str(args.saves)]
        child = subprocess.run(
            argv + (["--history"] if args.history else []), capture_output=True, text=True
        )
        if child.returncode != 0:
            print(f"{design}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
            return 1
        print(child.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
