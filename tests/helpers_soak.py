"""Child process of the soak test: ``jaxmlp train`` with the process's resident memory and open
file descriptors recorded right after every epoch's checkpoint.

    python tests/helpers_soak.py OUT.json -- <jaxmlp train arguments>

Writes ``{"exit": status, "epochs": [{"epoch", "rss_kib", "fds"}, ...]}``.
"""

from __future__ import annotations

import json
import os
import sys


def rss_kib() -> int:
    """Resident set size of this process (VmRSS in /proc/self/status), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> int:
    out, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: helpers_soak.py OUT.json -- <train arguments>"
    from jaxmlp import checkpoints, cli

    samples = []
    save = checkpoints.save

    def measured_save(directory, epoch, state, **kwargs):
        path = save(directory, epoch, state, **kwargs)
        samples.append({"epoch": int(epoch), "rss_kib": rss_kib(), "fds": open_fds()})
        return path

    checkpoints.save = measured_save
    status = cli.main(["train", *argv])
    with open(out, "w") as f:
        json.dump({"exit": status, "epochs": samples}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
