"""Benchmark scripts: each prints a markdown section and records it in ``bench/results/NAME.md``."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def publish(name: str, text: str, quick: bool) -> str:
    """Print a benchmark's section; a full run (never a quick one) also records it for BENCHMARKS.md."""
    print(text)
    if not quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
    return text
