"""Command line: choose sections and mode, run them, keep the raw JSON, write the report."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

SECTIONS = (
    "correctness",
    "gradient_speed",
    "throughput",
    "limit",
    "scaling",
    "privacy",
    "sweep",
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="jaxmlp benchmarks: gradient correctness and speed, training throughput "
        "against NumPy and PyTorch, efficiency against the hardware's matmul limit, scaling.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats (a smoke test, under 2 minutes)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for the JSON, the markdown report and the plots",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip sections already in today's results file for this machine",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new results file instead of merging into today's",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Imported here, after the BLAS environment has been cleaned by __main__.
    from benchmarks import machine, report
    from benchmarks.common import FULL, QUICK
    from jaxmlp._files import write_json  # atomic: an interrupted run leaves the old file

    mode = QUICK if args.quick else FULL
    description = machine.describe()
    stem = f"{machine.slug(description)}-{datetime.date.today().isoformat()}"
    if mode.quick:
        stem += "-quick"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stem}.json"
    results: dict[str, Any] = {"schema": 1, "sections": {}}
    if path.exists() and not args.fresh:
        results = json.loads(path.read_text())
    results["machine"] = description
    results["mode"] = mode.name
    results["torch_enabled"] = not args.no_torch
    print(
        f"jaxmlp benchmarks ({mode.name}) on {description['cpu']}, "
        f"{description['backend']} backend; BLAS overrides removed: "
        f"{description['blas_env_removed'] or 'none were set'}",
        flush=True,
    )
    for name in args.sections:
        if args.resume and name in results["sections"]:
            print(f"[{name}] already done, skipped (--resume)", flush=True)
            continue
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        section = module.run(mode, results=results, use_torch=not args.no_torch)
        section["seconds"] = round(time.perf_counter() - start, 1)
        section["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        section["load_average_at_end"] = list(os.getloadavg())
        results["sections"][name] = section
        write_json(path, results)
        print(f"[{name}] done in {section['seconds']} s", flush=True)
    report_path = report.write(results, args.out, stem)
    write_json(path, results)
    print(f"wrote {path} and {report_path}", flush=True)
    return 0
