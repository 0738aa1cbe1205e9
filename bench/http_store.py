"""knn over HTTP by the size of the exclusion list, and the route it takes (URL parameter or external data).

A ClickHouse server reads each URL parameter into at most 128 KiB (``http_max_field_value_size``), so the
store sends up to 96 KiB of excluded ids as an ``Array(String)`` parameter and longer lists as an external
table in the request body. This measures both routes side by side (the parameter route forced to external
data for the small lists, to see what the route itself costs) against the loopback server of the tests
(``tests/chhttp.py``, chDB behind a Python HTTP server) in its ClickHouse and MyScale modes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import core.store
from bench import publish
from core.config import Settings
from core.records import ImageBatch
from core.store import ClickHouseStore, open_store
from tests.chhttp import ChHttpServer

DIM = 512
K = 9


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _medians_ms(fns: list[Callable[[], object] | None], reps: int) -> list[float | None]:
    """Median ms of each function, called in turn within every repetition so that load drift hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for rep in range(reps + 1):
        for i, fn in enumerate(fns):
            if fn is None:
                continue
            t = time.perf_counter()
            fn()
            if rep:  # the first round warms up
                times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) if t else None for t in times]


def _forced_external(fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        budget = core.store.ID_PARAM_BYTES
        core.store.ID_PARAM_BYTES = -1  # every list takes the external route
        try:
            return fn()
        finally:
            core.store.ID_PARAM_BYTES = budget

    return call


def run(quick: bool = False) -> str:
    """Print (and, for a full run, record) the table."""
    n = 4_000 if quick else 25_000
    reps = 3 if quick else 11
    sizes = [0, 1_000, 5_000, 20_000] if not quick else [0, 1_000, 3_000]
    rng = np.random.default_rng(0)
    X = _unit(rng, n)
    Q = _unit(np.random.default_rng(1), 4)
    ids = [f"photo-{i:08d}" for i in range(n)]
    lines = [
        "## knn over HTTP: exclusion lists and their route",
        "",
        f"{n:,} rows of {DIM}-d unit vectors, k = {K}, median of {reps} queries (ms, the routes called in turn) through the store's HTTP client "
        "against `tests/chhttp.py` (chDB behind a Python HTTP server on 127.0.0.1, one query at a time). "
        "Excluded ids are the nearest rows to the query, as in a labelling round. `param` sends the list as an "
        "`Array(String)` URL parameter, `external` as an external table (RowBinary) in the request body; the store "
        "picks `param` up to 96 KiB (about 6,000 ids of this length) and `external` above, where the parameter "
        "route is refused (128 KiB). The machine was shared with other work; compare numbers within a row.",
        "",
        "| server | excluded ids | param (ms) | external (ms) | ids_present of them (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    pairs: list[tuple[str, int, float, float]] = []
    base: dict[str, float] = {}  # knn without exclusions
    last: dict[str, float] = {}  # knn with the longest list, external
    for mode in ("clickhouse", "myscale"):
        with (
            tempfile.TemporaryDirectory() as tmp,
            ChHttpServer(Path(tmp) / "srv", myscale=mode == "myscale") as srv,
        ):
            store = open_store(Settings(data_dir=Path(tmp) / "data", db_url=srv.url), dim=DIM)
            for i in range(0, n, 5_000):
                store.insert(ImageBatch(ids[i : i + 5_000], ["u"] * len(ids[i : i + 5_000]), X[i : i + 5_000],
                                        [""] * len(ids[i : i + 5_000]), ["bench"] * len(ids[i : i + 5_000])))  # fmt: skip
            store.optimize()
            order = np.argsort(-(X @ Q[0]))
            for size in sizes:
                excluded = [ids[j] for j in order[:size]]
                fits = core.store._param_bytes(excluded) <= core.store.ID_PARAM_BYTES

                def knn(ex: list[str] = excluded, s: ClickHouseStore = store) -> object:
                    return s.knn(Q[0], K, ex)

                def present(ex: list[str] = excluded, s: ClickHouseStore = store) -> object:
                    return s.ids_present(ex)

                param, external, present_ms = _medians_ms(
                    [
                        knn if fits else None,
                        _forced_external(knn) if size else None,
                        present if size else None,
                    ],
                    reps,
                )
                if size == 0 and param is not None:
                    base[mode] = param
                if external is not None:
                    last[mode] = external
                if param is not None and external is not None:
                    pairs.append((mode, size, param, external))
                lines.append(
                    f"| {mode} | {size:,} | {'refused' if param is None else f'{param:.1f}'} | "
                    f"{'—' if external is None else f'{external:.1f}'} | {'—' if present_ms is None else f'{present_ms:.1f}'} |"
                )
            store.close()
    ratios = ", ".join(f"{m} {size:,}: {e / p:.2f}×" for m, size, p, e in pairs)
    lo, hi = min(e / p for *_, p, e in pairs), max(e / p for *_, p, e in pairs)
    longest = ", ".join(f"{m}: {e / base[m]:.1f}×" for m, e in last.items())
    lines += [
        "",
        f"External data against the parameter route at the same list size (external ÷ param): {ratios}; "
        f"the longest list against no exclusions (external ÷ none): {longest}. At the sizes both routes "
        f"can carry they were {lo:.2f}–{hi:.2f}× of each other in this run (of the order of this shared "
        f"machine's noise); the external table is what lets a list past 128 KiB through at all ({sizes[-1]:,} ids are "
        f"{core.store._param_bytes(ids[: sizes[-1]]) / 1024:.0f} KiB as a parameter).",
        "",
    ]
    return publish("http_store", "\n".join(lines) + "\n", quick)


if __name__ == "__main__":
    run()
