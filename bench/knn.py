"""kNN benchmark: ``ClickHouseStore.knn`` on embedded chDB against numpy exact search on the same data.

Run ``python -m bench.knn`` (full: 25k, 100k, 1M) or ``python -m bench.knn --quick`` (small sizes).
Each size and data kind runs in its own process, because chDB opens one database path per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DIM = 512
K = 9
N_EXCLUDED = 500
RESULTS = Path(__file__).parent / "results"


# ----------------------------------------------------------------------------------------------------
# Data


def make_data(n: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors and a few query vectors: uniform on the sphere, or clustered like CLIP.

    Clustered: one centre per 250 images; an image is its centre plus Gaussian noise (image-image
    cosine within a cluster ~0.8); a query is a centre plus larger noise (query-centre cosine ~0.7).
    """
    rng = np.random.default_rng(seed)
    n_queries = 64
    if kind == "random":
        X = rng.standard_normal((n, DIM), dtype=np.float32)
        Q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    else:
        centres = rng.standard_normal((max(10, n // 250), DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        X = np.empty((n, DIM), dtype=np.float32)
        step = 100_000  # build in slices to keep the peak memory near the final matrix
        for s in range(0, n, step):
            m = min(step, n - s)
            X[s : s + m] = centres[rng.integers(0, len(centres), m)]
            X[s : s + m] += rng.standard_normal((m, DIM), dtype=np.float32) * np.float32(0.5 / np.sqrt(DIM))
        Q = centres[rng.integers(0, len(centres), n_queries)]
        Q = Q + rng.standard_normal(Q.shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return X, Q.astype(np.float32)


def numpy_knn(X: np.ndarray, q: np.ndarray, k: int, exclude_rows: np.ndarray | None = None) -> np.ndarray:
    """Exact top-``k`` rows by cosine (unit vectors: by dot product), skipping ``exclude_rows``."""
    s = X @ q
    if exclude_rows is not None and len(exclude_rows):
        s[exclude_rows] = -np.inf
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


# ----------------------------------------------------------------------------------------------------
# One size, one kind, one process


def worker(n: int, kind: str, n_queries: int, hnsw: bool, out: Path) -> None:
    """Load ``n`` vectors into a fresh embedded store, time every variant, write JSON lines to ``out``."""
    from core.config import Settings
    from core.records import ImageBatch
    from core.store import HnswParams, open_store

    def emit(rec: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    X, Q = make_data(n, kind)
    Q = Q[:n_queries]
    ids = [f"img{i:08d}" for i in range(n)]
    row_of = {s: i for i, s in enumerate(ids)}
    data_dir = Path(tempfile.mkdtemp(prefix=f"knn-{kind}-{n}-"))
    params = HnswParams(m=16, ef_construction=128)
    store = open_store(Settings(data_dir=data_dir), dim=DIM, hnsw=params)
    store.ensure_schema()
    t = time.perf_counter()
    step = 50_000
    for s in range(0, n, step):
        e = min(n, s + step)
        store.insert(
            ImageBatch(
                ids[s:e],
                [f"https://example.org/{i}" for i in ids[s:e]],
                X[s:e],
                [""] * (e - s),
                ["vectors"] * (e - s),
            )
        )
    insert_s = time.perf_counter() - t
    t = time.perf_counter()
    store.optimize()
    emit({"what": "load", "insert_s": insert_s, "optimize_s": time.perf_counter() - t})

    # The 500 excluded ids are the query's exact nearest ones: labelled images sit near the classifier
    # vector, which is the hard case for an index that filters after searching.
    excl = [numpy_knn(X, q, N_EXCLUDED) for q in Q]
    excl_ids = [[ids[i] for i in rows] for rows in excl]
    truth = {
        0: [set(numpy_knn(X, q, K)) for q in Q],
        N_EXCLUDED: [set(numpy_knn(X, q, K, excl[j])) for j, q in enumerate(Q)],
    }

    def measure(label: str, run_one: Callable[[int, int], list[int]]) -> None:
        for n_ex in (0, N_EXCLUDED):
            run_one(0, n_ex)  # warm-up (page cache, index cache)
            times, recalls = [], []
            for j in range(len(Q)):
                t0 = time.perf_counter()
                rows = run_one(j, n_ex)
                times.append((time.perf_counter() - t0) * 1000)
                recalls.append(len(set(rows) & truth[n_ex][j]) / K)
            emit(
                {
                    "what": "knn",
                    "method": label,
                    "excluded": n_ex,
                    "p50": _pct(times, 50),
                    "p95": _pct(times, 95),
                    "recall": float(np.mean(recalls)),
                }
            )

    def numpy_one(j: int, n_ex: int) -> list[int]:
        rows = np.fromiter((row_of[s] for s in excl_ids[j]), np.int64) if n_ex else None
        return list(numpy_knn(X, Q[j], K, rows))

    def store_one(j: int, n_ex: int) -> list[int]:
        return [row_of[h.id] for h in store.knn(Q[j], K, excl_ids[j] if n_ex else ())]

    measure("numpy exact", numpy_one)
    store.hot_copy = False
    store.brute_metric = "cosine"
    measure("chDB brute force on MergeTree, cosineDistance", store_one)
    store.brute_metric = "dot"
    measure("chDB brute force on MergeTree, 1 - dotProduct", store_one)
    store.hot_copy = True
    t = time.perf_counter()
    store.knn(Q[0], K)  # the first knn fills the in-memory copy
    emit({"what": "hot", "fill_s": time.perf_counter() - t})
    store.brute_metric = "cosine"
    measure("chDB brute force on in-memory copy, cosineDistance", store_one)
    store.brute_metric = "dot"
    measure("chDB brute force on in-memory copy, 1 - dotProduct (default)", store_one)

    if n <= 25_000 and kind == "random":
        _concurrency(store, Q, emit)

    if hnsw:
        t = time.perf_counter()
        status = store.index_create()
        store.hot_copy = False  # the store prefers its in-memory scan to the index while it has one
        emit({"what": "build", "build_s": time.perf_counter() - t, "detail": status.detail})
        for ef in (64, 256):
            store.hnsw = HnswParams(m=params.m, ef_construction=params.ef_construction, ef_search=ef)
            measure(f"chDB HNSW M={params.m} ef_c={params.ef_construction} ef_s={ef}", store_one)
    store.close()


def _concurrency(store, Q: np.ndarray, emit: Callable[[dict], None]) -> None:
    """knn/s with 1 and 2 caller threads: through the store (which serialises chDB calls), and with
    one unlocked clickhouse-connect client per thread on the same engine, to see whether chDB itself
    runs queries side by side usefully."""
    import clickhouse_connect

    from core.dialects import EXCLUDED_PARAM, ClickHouseDialect

    per_thread = 10
    sql = ClickHouseDialect().knn(store._hot, EXCLUDED_PARAM, 0, K, layout=store.layout).sql
    clients = [store._client, clickhouse_connect.get_client(interface="chdb", path=store._target.path)]
    # The store's in-memory copy is a temporary table of its own session; give the second client one too.
    clients[1].command(
        f"CREATE TEMPORARY TABLE {store._hot} ENGINE = Memory AS "
        f"SELECT id, url, caption, source, vector FROM {store.table}"
    )
    for threads, how in ((1, "store"), (2, "store"), (1, "unlocked clients"), (2, "unlocked clients")):

        def loop(offset: int, how: str = how) -> None:
            for j in range(per_thread):
                q = Q[(offset + j) % len(Q)]
                if how == "store":
                    store.knn(q, K)
                else:
                    clients[offset // per_thread].query(
                        sql, parameters={"v": q.tolist(), "ex": [], "k": K, "m": K}
                    )

        ts = [threading.Thread(target=loop, args=(i * per_thread,)) for i in range(threads)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        dt = time.perf_counter() - t
        emit({"what": "concurrency", "threads": threads, "how": how, "qps": threads * per_thread / dt})
    clients[1].close()


# ----------------------------------------------------------------------------------------------------
# Driver


def _findings(all_recs: dict[tuple[int, str], list[dict]]) -> str:
    """What the numbers of this run say, and the defaults they support (every number from the tables)."""

    def p50(method: str, n: int, kind: str, excluded: int) -> float | None:
        for r in all_recs.get((n, kind), []):
            if r["what"] == "knn" and r["method"] == method and r["excluded"] == excluded:
                return float(r["p50"])
        return None

    def ratios(num: str, den: str, sizes: list[tuple[int, str]], excluded: tuple[int, ...] = (0, 500)) -> str:
        got = [
            a / b
            for n, kind in sizes
            for e in excluded
            if (a := p50(num, n, kind, e)) is not None and (b := p50(den, n, kind, e))
        ]
        return f"{min(got):.1f}–{max(got):.1f}×" if got else "n/a"

    default = "chDB brute force on in-memory copy, 1 - dotProduct (default)"
    numpy = "numpy exact"
    sizes = sorted(all_recs)
    by_n = {n: [(m, k) for m, k in sizes if m == n] for n, _ in sizes}
    hnsw = [
        r
        for recs in all_recs.values()
        for r in recs
        if r["what"] == "knn" and r["method"].startswith("chDB HNSW")
    ]
    builds = [r["build_s"] for recs in all_recs.values() for r in recs if r["what"] == "build"]
    qps = {
        (r["how"], r["threads"]): r["qps"]
        for recs in all_recs.values()
        for r in recs
        if r["what"] == "concurrency"
    }
    lines = [
        "What the numbers of this run say, and the defaults they support:",
        "",
        "- **Reading the vectors back is the cost, not the arithmetic.** The same scan on a Memory-engine copy "
        f"of the table ran {ratios('chDB brute force on MergeTree, 1 - dotProduct', default, sizes)} faster than "
        "on the MergeTree table (uncompressed, one part). So the embedded store keeps a *temporary* in-memory "
        "copy for `knn` (filled on the first search; ~2 KiB a row, so it is skipped above 2M rows; HTTP "
        "servers scan their own table).",
        "- **`1 - dotProduct` on unit vectors** ran "
        f"{ratios('chDB brute force on in-memory copy, cosineDistance', default, sizes)} faster than "
        "`cosineDistance` on the in-memory copy, with the same ranking; the store normalises on insert and uses it.",
        "- **Exclusions go outside the scan**: the nearest k + |excluded| rows first, then `NOT IN` — exact; "
        "500 excluded ids cost "
        + (
            f"{min(g):.1f}–{max(g):.1f}× the time of none"
            if (
                g := [
                    a / b
                    for n, k in sizes
                    if (a := p50(default, n, k, 500)) is not None and (b := p50(default, n, k, 0))
                ]
            )
            else "n/a"
        )
        + ".",
    ]
    if hnsw:
        recalls = [r["recall"] for r in hnsw]
        lines.append(
            "- **The HNSW index does not pay on this machine.** Builds took "
            f"{min(builds):.0f}–{max(builds):.0f} s; its queries ran "
            f"{ratios(hnsw[0]['method'], default, sizes)} the time of the in-memory scan (smallest ef_s), with "
            f"recall@9 {min(recalls):.2f}–{max(recalls):.2f} (HNSW needs structure: uniform random vectors "
            "recall worst). A hard-negative round excludes the nearest labelled images, so the index must "
            "return k + |excluded| rows, re-scored in Float32. Default: no automatic index; an embedded store "
            "searches its in-memory copy (exact, recall 1.0); `vdx index create` serves tables above the copy "
            "limit, and servers."
        )
    goals = []
    if 25_000 in by_n:
        goals.append(f"25k, p50 ≤ 5× numpy: the default ran {ratios(default, numpy, by_n[25_000])} numpy")
    if 1_000_000 in by_n:
        goals.append(
            f"1M, p50 ≤ numpy exact with recall@9 ≥ 0.95: exact in-memory search ran "
            f"{ratios(default, numpy, by_n[1_000_000])} numpy with recall 1.0 (no index needed)"
        )
    if goals:
        lines.append(
            "- **Goals** — "
            + "; ".join(goals)
            + ". A ClickHouse or MyScale server with more cores, its own caches and an index built off the "
            "serving path (MyScale's MSTG builds in the background) is where an ANN index pays; chDB's index "
            "builds share the machine's cores with the bot."
        )
    if ("unlocked clients", 2) in qps and ("store", 2) in qps:
        lines.append(
            f"- **Concurrency**: two unlocked chDB clients served {qps[('unlocked clients', 2)]:.0f} knn/s, the "
            f"store's one locked client {qps[('store', 2)]:.0f} knn/s with 2 caller threads. The store keeps one "
            "client behind a lock: one in-memory copy, correct answers per thread; a pool of clients, each with "
            "its own copy, is the next step if concurrent searches matter more than memory."
        )
    return "\n".join(lines) + "\n"


def _run_size(n: int, kind: str, n_queries: int, hnsw: bool, timeout_s: float) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        out = Path(f.name)
    cmd = [
        sys.executable,
        "-m",
        "bench.knn",
        "--worker",
        str(n),
        kind,
        str(n_queries),
        str(int(hnsw)),
        str(out),
    ]
    # numpy's BLAS gets every core, as chDB does (its max_threads defaults to the core count).
    cores = str(os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=cores, OPENBLAS_NUM_THREADS=cores)
    timed_out = False
    try:
        subprocess.run(cmd, check=True, timeout=timeout_s, env=env, cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        timed_out = True
    except subprocess.CalledProcessError as e:  # keep what the worker measured before it failed
        print(f"knn bench: worker for {n:,} {kind} failed with exit code {e.returncode}", file=sys.stderr)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink()
    if timed_out:
        recs.append({"what": "timeout", "after_s": timeout_s})
    return recs


def _table(all_recs: dict[tuple[int, str], list[dict]]) -> str:
    lines = [
        "| rows | data | method | excluded | p50 ms | p95 ms | × numpy p50 | recall@9 |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for (n, kind), recs in all_recs.items():
        ref = {r["excluded"]: r["p50"] for r in recs if r["what"] == "knn" and r["method"] == "numpy exact"}
        for r in recs:
            if r["what"] != "knn":
                continue
            ratio = r["p50"] / ref[r["excluded"]] if ref.get(r["excluded"]) else float("nan")
            lines.append(
                f"| {n:,} | {kind} | {r['method']} | {r['excluded']} | {r['p50']:.1f} | {r['p95']:.1f} | "
                f"{ratio:.1f} | {r['recall']:.3f} |"
            )
    return "\n".join(lines)


def _extras(all_recs: dict[tuple[int, str], list[dict]]) -> str:
    lines = [
        "| rows | data | insert s | OPTIMIZE s | in-memory copy fill s | HNSW build s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    notes = []
    for (n, kind), recs in all_recs.items():
        load = next((r for r in recs if r["what"] == "load"), None)
        build = next((r for r in recs if r["what"] == "build"), None)
        hot = next((r for r in recs if r["what"] == "hot"), None)
        timeout = next((r for r in recs if r["what"] == "timeout"), None)
        b = (
            f"{build['build_s']:.0f}"
            if build
            else (f"> {timeout['after_s'] / 60:.0f} min (stopped)" if timeout else "—")
        )
        if load:
            fill = f"{hot['fill_s']:.1f}" if hot else "—"
            lines.append(
                f"| {n:,} | {kind} | {load['insert_s']:.1f} | {load['optimize_s']:.1f} | {fill} | {b} |"
            )
        for r in recs:
            if r["what"] == "concurrency":
                notes.append(f"{r['how']}, {r['threads']} thread(s): {r['qps']:.1f} knn/s")
    text = "\n".join(lines)
    if notes:
        text += (
            "\n\nThroughput with concurrent callers, smallest random set (in-memory brute force, no exclusions): "
            + "; ".join(notes)
            + "."
        )
    return text


def run(quick: bool = False) -> str:
    """Measure every size and method; return (and save) the markdown section."""
    if quick:
        plan = [(3_000, "random", 8, False), (3_000, "clustered", 8, True)]
        timeout = 120.0
    else:
        # HNSW builds take minutes on this 2-core machine, so they run where they answer a question:
        # 25k (both kinds) and 100k clustered; 1M is brute force only (build time extrapolated).
        plan = [
            (25_000, "random", 40, True),
            (25_000, "clustered", 40, True),
            (100_000, "random", 20, False),
            (1_000_000, "clustered", 10, False),
            (100_000, "clustered", 20, True),
            (1_000_000, "random", 10, False),
        ]
        timeout = float(os.environ.get("VDX_BENCH_KNN_TIMEOUT", "900"))
    all_recs: dict[tuple[int, str], list[dict]] = {}
    for n, kind, nq, hnsw in plan:
        print(f"knn bench: {n:,} {kind} …", file=sys.stderr, flush=True)
        all_recs[(n, kind)] = _run_size(n, kind, nq, hnsw, timeout)
        text = _render(dict(sorted(all_recs.items())))
        if not quick:  # after every size, so a long run that is stopped still leaves its tables
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "knn.md").write_text(text)
    print(text)
    return text


def _render(all_recs: dict[tuple[int, str], list[dict]]) -> str:
    cpu = platform.processor() or platform.machine()
    return (
        "## kNN search: embedded chDB vs numpy exact\n\n"
        f"`ClickHouseStore.knn` (k={K}) on embedded chDB (clickhouse-connect's chDB client) against numpy exact "
        f"search (`X @ q` + `argpartition`, BLAS on all cores) on the same {DIM}-d unit vectors, in the same "
        "process and run. "
        f"Excluded = the query's {N_EXCLUDED} exact nearest ids (labelled images sit next to the classifier "
        "vector: the hard case). Data: *random* = uniform on the sphere; *clustered* = one centre per 250 "
        "images, image–image cosine ≈ 0.8 in a cluster, queries near a centre. Every chDB query takes the "
        "nearest k + excluded rows and drops the excluded ids outside (a `WHERE id NOT IN` inside made scans "
        "~2× slower, and makes the HNSW index post-filter its hits down to nothing). *MergeTree* = a scan of "
        "the stored table (vector column uncompressed, one merged part); *in-memory copy* = the same scan on "
        "the store's temporary Memory-engine copy (what the store does on chDB). *HNSW* = ClickHouse "
        "`vector_similarity('hnsw', 'cosineDistance', 512, 'bf16', M, ef_construction)`, asked for "
        "2·(k + excluded) rows and re-scored in Float32 (`vector_search_with_rescoring = 1`); ef_s = "
        "`hnsw_candidate_list_size_for_search` (raised to the rows asked for when that is larger). "
        f"Machine: {os.cpu_count()}-core shared CPU ({cpu}), no GPU, chDB 4.4 (ClickHouse 26.9). p50/p95 over "
        "the queries of one run; other jobs shared the 2 cores during the run, so compare rows of one size "
        "(measured back to back), not absolute milliseconds.\n\n"
        + _table(all_recs)
        + "\n\nLoading and index build:\n\n"
        + _extras(all_recs)
        + "\n\n"
        + _findings(all_recs)
    )


def main() -> None:
    """Command line: ``--quick`` for the smoke run, ``--worker`` is internal."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=5, metavar=("N", "KIND", "QUERIES", "HNSW", "OUT"))
    a = ap.parse_args()
    if a.worker:
        n, kind, nq, hnsw, out = a.worker
        worker(int(n), kind, int(nq), bool(int(hnsw)), Path(out))
    else:
        run(quick=a.quick)


if __name__ == "__main__":
    main()
