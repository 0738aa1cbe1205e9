"""Matches benchmark: every image a classifier accepts, computed by ``ClickHouseStore.matches`` in
embedded chDB, against numpy on the same vectors.

Run ``python -m bench.matches`` (25k, 100k, 1M) or ``python -m bench.matches --quick``. Each size and
data kind runs in its own process (chDB opens one database path per process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import publish
from bench.knn import DIM, make_data

ALL = 2**62
PAGE = 9


def classifier(X: np.ndarray, Q: np.ndarray, j: int) -> np.ndarray:
    """A taught-looking weight: query ``j`` pulled towards the mean of its 5 nearest images."""
    near = np.argpartition(-(X @ Q[j]), 5)[:5]
    w = Q[j] + X[near].mean(axis=0)
    return (w / np.linalg.norm(w)).astype(np.float32)


def numpy_matches(X: np.ndarray, w: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows scoring above ``t``, best first (ties in row order, which is id order here), and their scores."""
    s = X @ w
    rows = np.flatnonzero(s > t)
    order = rows[np.argsort(-s[rows], kind="stable")]
    return order, s[order]


def same_ranking(got: list[int], want: np.ndarray, s: np.ndarray, t: float, tol: float = 1e-5) -> bool:
    """numpy's ranking, up to float32 rounding: rows may differ only within ``tol`` of the boundary,
    and two rows may swap only where their scores are within ``tol``."""
    g, w = set(got), set(want.tolist())
    if any(abs(float(s[r]) - t) > tol for r in g ^ w):
        return False
    scores = s[np.asarray(got, dtype=np.int64)]
    return bool(np.all(np.diff(scores) <= tol))


def worker(n: int, kind: str, reps: int, out: Path) -> None:
    """Load ``n`` vectors into a fresh embedded store, time numpy and the store, write JSON lines."""
    from core.config import Settings
    from core.records import ImageBatch
    from core.store import open_store

    def emit(rec: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    X, Q = make_data(n, kind, seed=1)
    ids = [f"img{i:08d}" for i in range(n)]
    store = open_store(Settings(data_dir=Path(tempfile.mkdtemp(prefix=f"matches-{kind}-{n}-"))), dim=DIM)
    store.ensure_schema()
    t0 = time.perf_counter()
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        store.insert(
            ImageBatch(
                ids[s:e],
                [f"https://example.org/{i}" for i in ids[s:e]],
                X[s:e],
                [""] * (e - s),
                ["vectors"] * (e - s),
            )
        )
    store.optimize()
    emit({"what": "load", "s": time.perf_counter() - t0})
    # Boundaries that accept about 100 images, 1 % and 10 % of the collection.
    for j, share in enumerate((100 / n, 0.01, 0.10)):
        w = classifier(X, Q, j)
        t = float(np.quantile(X @ w, 1 - share))
        want, _ = numpy_matches(X, w, t)
        # Each repetition asks with a slightly different weight (as consecutive refits do), so that no
        # cache keyed by the query (ClickHouse's query condition cache, say) answers a repeat.
        rng = np.random.default_rng(j)
        nudged = [w + rng.standard_normal(w.shape).astype(np.float32) * np.float32(1e-4) for _ in range(reps)]
        nudged = [(v / np.linalg.norm(v)).astype(np.float32) for v in nudged]
        for where in ("in-memory copy", "MergeTree"):
            store.hot_copy = where == "in-memory copy"
            store.matches(w, t, PAGE)  # warm-up (fills the in-memory copy once)
            got = store.matches(w, t, ALL)
            rows = [int(m.id[3:]) for m in got.items]
            agree = abs(got.total - len(want)) <= 2 and same_ranking(rows, want, X @ w, t)
            for what, limit in (("all matches", ALL), ("first page + count", PAGE)):
                times = []
                for w_r in nudged:
                    t1 = time.perf_counter()
                    store.matches(w_r, t, limit)
                    times.append((time.perf_counter() - t1) * 1000)
                emit(
                    {
                        "what": "store",
                        "j": j,
                        "where": where,
                        "task": what,
                        "matches": len(want),
                        "agree": agree,
                        "p50": float(np.median(times)),
                    }
                )
        times = []
        for w_r in nudged:
            t1 = time.perf_counter()
            numpy_matches(X, w_r, t)
            times.append((time.perf_counter() - t1) * 1000)
        emit({"what": "numpy", "j": j, "matches": len(want), "p50": float(np.median(times))})
    store.close()


def _run(n: int, kind: str, reps: int) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        out = Path(f.name)
    cores = str(os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=cores, OPENBLAS_NUM_THREADS=cores)
    cmd = [sys.executable, "-m", "bench.matches", "--worker", str(n), kind, str(reps), str(out)]
    try:
        subprocess.run(cmd, check=True, timeout=1200, env=env, cwd=Path(__file__).parent.parent)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
        print(f"matches bench: {n:,} {kind} stopped: {e}", file=sys.stderr)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink()
    return recs


def _render(results: dict[tuple[int, str], list[dict]], reps: dict[int, int]) -> str:
    lines = [
        "| rows | data | matches | numpy ms | chDB all matches ms | × numpy | chDB first page + count ms | "
        "× numpy | MergeTree all ms | same as numpy |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (n, kind), recs in results.items():
        for r in (r for r in recs if r["what"] == "numpy"):
            m, j = r["matches"], r["j"]
            mine = [x for x in recs if x["what"] == "store" and x["j"] == j]

            def find(where: str, task: str, mine: list[dict] = mine) -> dict:
                return next(x for x in mine if x["where"] == where and x["task"] == task)

            hot_all, hot_page = (
                find("in-memory copy", "all matches"),
                find("in-memory copy", "first page + count"),
            )
            mt_all = find("MergeTree", "all matches")
            agree = all(x["agree"] for x in mine)
            lines.append(
                f"| {n:,} | {kind} | {m:,} | {r['p50']:.1f} | {hot_all['p50']:.1f} | {hot_all['p50'] / r['p50']:.1f} | "
                f"{hot_page['p50']:.1f} | {hot_page['p50'] / r['p50']:.1f} | {mt_all['p50']:.1f} | {'yes' if agree else 'NO'} |"
            )
    loads = "; ".join(
        f"{n:,} {kind}: {next((r['s'] for r in recs if r['what'] == 'load'), float('nan')):.0f} s"
        for (n, kind), recs in results.items()
    )
    cpu = platform.processor() or platform.machine()
    return (
        "## Matches: every image a classifier accepts, chDB vs numpy\n\n"
        "`ClickHouseStore.matches` scores the whole table inside embedded chDB in one scan "
        "(`dotProduct(vector, {w:Array(Float32)})`, the weight a query parameter; `count() OVER ()` gives the "
        "number of matches in the same scan) and returns the rows above the boundary, best first (ties by id). "
        "numpy does the same on the same unit vectors in the same process: `X @ w`, the rows above the "
        "boundary, a stable sort. The weight is a query pulled towards its 5 nearest images; the boundary "
        "accepts about 100 images, 1 % or 10 % of the collection. *all matches* = every accepted row with "
        "id, url, caption and score (what `/export` and `vdx export` read); *first page + count* = 9 rows and "
        "the total (what ⭐ Results and ▶ read); *MergeTree* = the same scan on the stored table instead of the "
        "store's in-memory copy. *same as numpy* = identical ids in identical order for every boundary. "
        f"Data as in the kNN benchmark (*random*, *clustered*). Each repetition uses the weight nudged by 1e-4 noise (as consecutive refits do), so that nothing keyed by the query answers a repeat. Medians of {', '.join(f'{r} ({n:,})' for n, r in reps.items())} "
        f"repetitions. Machine: {os.cpu_count()}-core shared CPU ({cpu}), no GPU; other jobs shared the cores "
        "during the run, so compare the columns of one row (measured back to back), not absolute milliseconds.\n\n"
        + "\n".join(lines)
        + f"\n\nLoading (insert + OPTIMIZE): {loads}.\n\n"
        + _findings(results)
    )


def _findings(results: dict[tuple[int, str], list[dict]]) -> str:
    """What the table says, computed from it."""
    page, every, mt = [], [], []
    agree = True
    for (n, _kind), recs in results.items():
        ref = {r["j"]: r["p50"] for r in recs if r["what"] == "numpy"}
        store = [x for x in recs if x["what"] == "store"]
        hot = {(x["j"], x["task"]): x["p50"] for x in store if x["where"] != "MergeTree"}
        for x in store:
            agree = agree and x["agree"]
            if x["where"] == "MergeTree":
                if hot.get((x["j"], x["task"])):
                    mt.append(x["p50"] / hot[(x["j"], x["task"])])
            elif ref.get(x["j"]):
                target = page if x["task"] == "first page + count" else every
                target.append((x["p50"] / ref[x["j"]], n, x["matches"]))
    if not page or not every:
        return ""
    slow = max(every)
    med = lambda xs: float(np.median([x[0] for x in xs]))  # noqa: E731
    return (
        f"Findings: the page ⭐ Results shows, with its count, took {med(page):.1f}× numpy's time (median over "
        f"every row; {min(page)[0]:.1f}–{max(page)[0]:.1f}×) with the scan inside the database and no vectors "
        f"leaving it. Reading every match took {med(every):.1f}× (median; {min(every)[0]:.1f}–{slow[0]:.1f}×, "
        f"the slowest being {slow[2]:,} matches of {slow[1]:,} rows). Scanning the stored MergeTree table instead "
        f"of the in-memory copy took {np.median(mt):.1f}× as long (median). "
        + (
            "Every ranking was numpy's (up to float32 rounding at the boundary)."
            if agree
            else "Some rankings differed from numpy's beyond float32 rounding: see the last column."
        )
        + "\n"
    )


def run(quick: bool = False) -> str:
    """Measure every size; return (and, for a full run, save) the markdown section."""
    plan = (
        [(5_000, "random", 5), (5_000, "clustered", 5)]
        if quick
        else [
            (25_000, "random", 20),
            (25_000, "clustered", 20),
            (100_000, "random", 10),
            (100_000, "clustered", 10),
            (1_000_000, "clustered", 3),
        ]
    )
    results: dict[tuple[int, str], list[dict]] = {}
    for n, kind, reps in plan:
        print(f"matches bench: {n:,} {kind} …", file=sys.stderr, flush=True)
        results[(n, kind)] = _run(n, kind, reps)
    return publish("matches", _render(results, {n: r for n, _, r in plan}), quick)


def main() -> None:
    """Command line: ``--quick`` for the smoke run, ``--worker`` is internal."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=4, metavar=("N", "KIND", "REPS", "OUT"))
    a = ap.parse_args()
    if a.worker:
        n, kind, reps, out = a.worker
        worker(int(n), kind, int(reps), Path(out))
    else:
        run(quick=a.quick)


if __name__ == "__main__":
    main()
