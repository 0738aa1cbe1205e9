"""Run every benchmark and write BENCHMARKS.md: ``python -m bench [--quick] [NAME ...]``.

Each benchmark runs in its own process (an embedded chDB database is one per process) and writes its
section to ``bench/results/NAME.md``; BENCHMARKS.md is those sections in a fixed order.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

from bench import RESULTS

HERE = Path(__file__).parent
ROOT = HERE.parent

ORDER = ["ingest", "knn", "http_store", "matches", "labelling", "bot_latency", "models", "photo_memory"]

HEADER = """# Benchmarks

Every table below is printed by a script in `bench/` and reproduced by one command:

    .venv/bin/python -m bench            # all of them (tens of minutes on 2 cores)
    .venv/bin/python -m bench knn        # one of them
    .venv/bin/python -m bench --quick    # a smoke run with small sizes (does not touch this file)

Measured on a shared 2-core x86-64 CPU machine without a GPU; numbers compared with each other
were measured side by side in one run, and ratios are what to trust, not absolute times.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(ORDER)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, prints only")
    args = parser.parse_args(argv)
    names = args.names or ORDER
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    failed = []
    for name in names:
        print(f"== bench.{name}", flush=True)
        code = f"import bench.{name} as m; m.run(quick={args.quick})"
        if subprocess.call([sys.executable, "-c", code], cwd=ROOT) != 0:
            failed.append(name)
    if not args.quick:
        write_benchmarks_md()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def write_benchmarks_md() -> Path:
    """Assemble BENCHMARKS.md from the recorded sections."""
    parts = [HEADER.rstrip() + f"\n\nPython {platform.python_version()}, {platform.machine()}.\n"]
    for name in ORDER:
        section = RESULTS / f"{name}.md"
        if section.exists():
            parts.append(section.read_text().strip() + "\n")
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out


if __name__ == "__main__":
    sys.exit(main())
