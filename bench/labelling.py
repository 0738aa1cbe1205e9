"""Labelling-loop benchmark: do a few rounds of 👍/👎 teach what a person or a group means? ``python -m bench.labelling``.

Simulated voters play the bot's loop through the same calls the bot makes: ``Explorer.next_batch``
-> every voter votes on the round -> ``core.votes.combine`` turns the votes into soft labels (as
``State.consensus`` does) -> ``Explorer.fit`` -> ``Explorer.top`` (what ⭐ Results shows: the bot
refits before it ranks, so Results always reflects every vote).

The data is harder than the CLIP-like "data A" of :mod:`core.synthetic` in the ways real sessions are:
the person wants only one or two of a concept's visual modes, the concept's text vector names the
whole concept and leans towards unrelated concepts, up to 4 modes, up to 60 % background. Three
variants with their own seeds (:data:`VARIANTS`); the round strategy is chosen on them, not on data A.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy loads: 2 shared cores, no oversubscription

import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench import publish
from core.classifier import ClassifierParams
from core.explorer import DEFAULT_STRATEGY, DUPLICATE_COSINE, Explorer
from core.store import VectorStore
from core.synthetic import NumpyStore, SyntheticConfig, SyntheticData, generate
from core.votes import combine

K = 9
ROUNDS = 5


@dataclass(frozen=True)
class Variant:
    """A harder data set: the generator's settings and how many of a concept's modes are wanted."""

    name: str
    config: SyntheticConfig
    wanted: tuple[int, int]  # modes the person wants, inclusive range (always fewer than the concept has)
    note: str


H3 = Variant(
    "H3",
    SyntheticConfig(
        subclusters=(3, 4),
        background=0.6,
        txt_favourite=0.0,
        txt_unrelated=2,
        txt_error=1.3,
        class_spread=0.35,
        img_jitter=1.5,
        sub_spread=0.8,
        seed=303,
    ),
    (1, 2),
    "3–4 modes, 1–2 wanted; 60 % background; siblings closer and photos more varied; "
    "text leans to 2 unrelated concepts (x1.3)",
)

VARIANTS = [
    Variant(
        "H1",
        SyntheticConfig(subclusters=(2, 3), background=0.3, txt_favourite=0.0, txt_unrelated=2, seed=101),
        (1, 1),
        "2–3 modes, one wanted; 30 % background; text leans to 2 unrelated concepts",
    ),
    Variant(
        "H2",
        SyntheticConfig(
            subclusters=(3, 4), background=0.45, txt_favourite=0.3, txt_unrelated=2, txt_error=1.2, seed=202
        ),
        (1, 2),
        "3–4 modes, 1–2 wanted; 45 % background; text leans to 2 unrelated concepts (x1.2) and to one mode",
    ),
    H3,
    Variant(
        "H4",
        replace(H3.config, seed=404),
        H3.wanted,
        "held out: H3's settings with a fresh seed, never used to choose anything",
    ),
]
HARDEST = "H3"
HELD_OUT = "H4"
# Where the voter scenarios run: the hardest variant and the held-out one.
VOTER_VARIANTS = (HARDEST, HELD_OUT)


@dataclass(frozen=True)
class Voter:
    """A simulated voter: slips with probability ``slip``; ``other_mode`` wants a different mode."""

    slip: float = 0.0
    other_mode: bool = False


SCENARIOS: dict[str, list[Voter]] = {
    "one voter, clean": [Voter()],
    "one voter, 10 % slips": [Voter(0.10)],
    "one voter, 20 % slips": [Voter(0.20)],
    "two voters, 15 % slips (ties)": [Voter(0.15), Voter(0.15)],
    "three voters, 15 % slips": [Voter(0.15), Voter(0.15), Voter(0.15)],
    "three voters, one wants another mode": [Voter(), Voter(), Voter(other_mode=True)],
}


@dataclass
class Task:
    """One concept to teach: the prior vector and who counts as a 👍 for each voter."""

    name: str
    prior: np.ndarray
    wanted: set[str]  # the majority's truth, what p@k is measured against
    other: set[str]  # the other-mode voter's truth


@dataclass
class Trace:
    """One session: per round 0..R (round 0 = zero-shot)."""

    p9: list[float] = field(default_factory=list)  # top(9) by the classifier alone, 👎 included
    p50: list[float] = field(default_factory=list)
    results9: list[float] = field(default_factory=list)  # what ⭐ Results shows (👎 left out)
    reshown: int = 0  # images shown in more than one round
    ended: int | None = None  # the round whose next_batch said "nothing else looks like it"
    round_s: list[float] = field(default_factory=list)  # next_batch + fit + top(9)
    fit_next_s: list[float] = field(default_factory=list)  # fit + next_batch (what 🔁 Refine costs)
    kept_prior: int = 0  # fits where the leave-one-out guard kept the prior


def tasks_for(data: SyntheticData, variant: Variant, n: int, seed: int) -> list[Task]:
    """``n`` concepts (seeded) with at least 20 wanted images; the wanted modes drawn per concept."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(data.ids)
    out: list[Task] = []
    for c in rng.permutation(len(data.text_vectors)):
        in_class = data.labels == c
        modes = np.unique(data.modes[in_class])
        if len(modes) < 2:
            continue
        n_want = int(rng.integers(variant.wanted[0], min(variant.wanted[1], len(modes) - 1) + 1))
        want = rng.choice(modes, size=n_want, replace=False)
        others = [m for m in modes if m not in want]
        wanted = in_class & np.isin(data.modes, want)
        if wanted.sum() < 20:
            continue
        other = in_class & (data.modes == rng.choice(others))
        out.append(Task(f"{variant.name}-c{c}", data.text_vectors[c], set(ids[wanted]), set(ids[other])))
        if len(out) == n:
            break
    return out


def _precision(ids: Sequence[str], truth: set[str], k: int) -> float:
    return sum(i in truth for i in ids[:k]) / k


def play(
    explorer: Explorer, task: Task, voters: Sequence[Voter], rounds: int = ROUNDS, seed: int = 0
) -> Trace:
    """One session of ``rounds`` rounds with ``voters``; votes combined as the bot combines them."""
    rng = np.random.default_rng(seed)
    session = explorer.start_vector(task.name, task.prior)
    votes: list[tuple[str, int, int]] = []
    shown: Counter[str] = Counter()
    trace = Trace()

    def measure() -> None:
        trace.p9.append(_precision([s.id for s in explorer.top(session, K, include_rejected=True)], task.wanted, K))
        trace.p50.append(_precision([s.id for s in explorer.top(session, 50, include_rejected=True)], task.wanted, 50))
        trace.results9.append(_precision([s.id for s in explorer.top(session, K)], task.wanted, K))

    measure()
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        batch = [] if trace.ended else explorer.next_batch(session, K)
        t1 = time.perf_counter()
        if not batch and trace.ended is None:
            trace.ended = r
        shown.update(h.id for h in batch)
        for h in batch:
            for u, v in enumerate(voters):
                truth = task.other if v.other_mode else task.wanted
                yes = (h.id in truth) != (rng.random() < v.slip)
                votes.append((h.id, u, 1 if yes else -1))
        t2 = time.perf_counter()
        explorer.fit(session, combine(votes).soft_labels())
        t3 = time.perf_counter()
        explorer.top(session, K)
        t4 = time.perf_counter()
        trace.kept_prior += session.kept_prior
        if batch:
            trace.round_s.append((t1 - t0) + (t4 - t2))
            trace.fit_next_s.append((t1 - t0) + (t3 - t2))
        measure()
    trace.reshown = sum(1 for n in shown.values() if n > 1)
    return trace


def run_all(explorer: Explorer, tasks: Sequence[Task], voters: Sequence[Voter]) -> list[Trace]:
    """Every task with the same voters (each session its own seed)."""
    return [play(explorer, t, voters, seed=n) for n, t in enumerate(tasks)]


def _mean(traces: Sequence[Trace], metric: str, r: int) -> float:
    return float(np.mean([getattr(t, metric)[r] for t in traces]))


def _below(traces: Sequence[Trace], r: int, metric: str = "p9") -> float:
    """Share of sessions whose ``metric`` at round ``r`` is below their own zero-shot p@9."""
    return float(np.mean([getattr(t, metric)[r] < t.p9[0] - 1e-9 for t in traces]))


def _ever_below(traces: Sequence[Trace], metric: str = "p9") -> float:
    return float(np.mean([min(getattr(t, metric)[1:]) < t.p9[0] - 1e-9 for t in traces]))


def _ms(xs: Sequence[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.1f}" if xs else "–"


def round_table(traces: Sequence[Trace]) -> str:
    """Per round: p@9, p@50, Results p@9, share below zero-shot, time."""
    lines = [
        "| round | p@9 | p@50 | ⭐ Results p@9 | below zero-shot (p@9 / Results) | sessions ended | round ms p50 | fit + next ms p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in range(len(traces[0].p9)):
        rs = [t.round_s[r - 1] for t in traces if r and len(t.round_s) >= r]
        fs = [t.fit_next_s[r - 1] for t in traces if r and len(t.fit_next_s) >= r]
        ended = sum(1 for t in traces if t.ended is not None and t.ended <= r)
        lines.append(
            f"| {r}{' (zero-shot)' if r == 0 else ''} | {_mean(traces, 'p9', r):.3f} | {_mean(traces, 'p50', r):.3f}"
            f" | {_mean(traces, 'results9', r):.3f} | {_below(traces, r):.0%} / {_below(traces, r, 'results9'):.0%}"
            f" | {ended} | {_ms(rs)} | {_ms(fs)} |"
        )
    return "\n".join(lines)


def summary_row(label: str, traces: Sequence[Trace], clean: Sequence[Trace] | None = None) -> str:
    """One line: p@9 per round, p@50 r3, Results p@9 r3, ever below zero-shot, re-shown, vs clean."""
    vs = f" | {_mean(traces, 'p9', ROUNDS) - _mean(clean, 'p9', ROUNDS):+.3f}" if clean is not None else " | –"
    return (
        f"| {label} | "
        + " | ".join(f"{_mean(traces, 'p9', r):.3f}" for r in range(ROUNDS + 1))
        + f" | {_mean(traces, 'p50', 3):.3f} | {_mean(traces, 'results9', 3):.3f}"
        + f" | {_ever_below(traces):.0%} / {_ever_below(traces, 'results9'):.0%}"
        + f" | {sum(t.reshown for t in traces)} | {sum(t.ended is not None for t in traces)}"
        + f" | {sum(t.kept_prior for t in traces)}{vs} |"
    )


SUMMARY_HEAD = (
    "| run | "
    + " | ".join(f"p@9 r{r}" for r in range(ROUNDS + 1))
    + " | p@50 r3 | Results p@9 r3 | ever below zero-shot (p@9 / Results) | re-shown images | sessions ended early"
    " | fits that kept the prior | p@9 r5 vs clean |\n|"
    + "---|" * (ROUNDS + 10)
)


def duplicate_statistics(datas: dict[str, SyntheticData], sample: int = 2000) -> str:
    """Nearest distinct neighbour cosines in each data set, against :data:`DUPLICATE_COSINE`."""
    rows = []
    for name, d in datas.items():
        rng = np.random.default_rng(0)
        pick = rng.choice(len(d.vectors), size=min(sample, len(d.vectors)), replace=False)
        S = d.vectors[pick] @ d.vectors.T
        S[np.arange(len(pick)), pick] = -np.inf
        nn = S.max(axis=1)
        rows.append(
            f"| {name} | {np.median(nn):.3f} | {np.quantile(nn, 0.99):.3f} | {nn.max():.3f} | {float((nn >= DUPLICATE_COSINE).mean()):.2%} |"
        )
    return (
        "| data | nearest neighbour cosine, median | 99th percentile | max | share ≥ threshold |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def open_chdb(tmp: Path, dim: int) -> VectorStore:
    """The product's embedded chDB store in ``tmp``."""
    from core.config import Settings
    from core.store import open_store

    store: VectorStore = open_store(Settings(data_dir=tmp), dim=dim)
    store.ensure_schema()
    return store


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(quick: bool = False) -> str:
    """Run the benchmark, print the markdown section and (full runs) write ``bench/results/labelling.md``."""
    n_images = 5_000 if quick else 25_000
    n_tasks = 8 if quick else 40
    t_start = time.perf_counter()
    datas: dict[str, SyntheticData] = {}
    tasks: dict[str, list[Task]] = {}
    stores: dict[str, NumpyStore] = {}
    for v in VARIANTS:
        d = generate(replace(v.config, n_images=n_images))
        datas[v.name] = d
        tasks[v.name] = tasks_for(d, v, n_tasks, seed=v.config.seed)
        s = NumpyStore(d.vectors.shape[1])
        s.insert(d.batch())
        stores[v.name] = s
    data_a = generate(SyntheticConfig(n_images=n_images))
    _log(f"data generated in {time.perf_counter() - t_start:.0f} s")

    candidates: dict[str, Callable[[NumpyStore], Explorer]] = {
        f"prior + {DEFAULT_STRATEGY} (default)": lambda s: Explorer(s),
        "prior + hard": lambda s: Explorer(s, strategy="hard"),
        "prior + boundary": lambda s: Explorer(s, strategy="boundary"),
        "prior + mixed, no guards (one-sided trust region and leave-one-out off)": lambda s: Explorer(
            s, params=ClassifierParams(loo_margin=None, one_sided_min_cos=-1.0)
        ),
        "original + hard (the demo)": lambda s: Explorer(s, params=ClassifierParams(method="original"), strategy="hard"),
    }
    clean = [Voter()]
    strategy_rows: list[str] = []
    per_variant: dict[str, dict[str, list[Trace]]] = {}
    for v in VARIANTS:
        per_variant[v.name] = {}
        for label, make in candidates.items():
            if quick and "no guards" in label:
                continue
            traces = run_all(make(stores[v.name]), tasks[v.name], clean)
            per_variant[v.name][label] = traces
            strategy_rows.append(summary_row(f"{v.name}: {label}", traces))
        _log(f"{v.name}: strategies done at {time.perf_counter() - t_start:.0f} s")

    trusting = ClassifierParams(flip_rate=None)
    scenario_rows: list[str] = []
    per_voters: dict[str, dict[str, list[Trace]]] = {}
    trusted_gap: dict[tuple[str, str], float] = {}  # (variant, scenario) -> p@9 r5 vs clean, every vote trusted
    for vn in VOTER_VARIANTS:
        per_voters[vn] = {}
        clean_traces = per_variant[vn][f"prior + {DEFAULT_STRATEGY} (default)"]
        for name, voters in SCENARIOS.items():
            traces = clean_traces if name == "one voter, clean" else run_all(Explorer(stores[vn]), tasks[vn], voters)
            per_voters[vn][name] = traces
            scenario_rows.append(summary_row(f"{vn}: {name}", traces, clean_traces))
            if any(v.slip for v in voters):
                before = run_all(Explorer(stores[vn], params=trusting), tasks[vn], voters)
                trusted_gap[vn, name] = _mean(before, "p9", ROUNDS) - _mean(clean_traces, "p9", ROUNDS)
                scenario_rows.append(summary_row(f"{vn}: {name}, every vote trusted (before)", before, clean_traces))
        _log(f"{vn}: voter scenarios done at {time.perf_counter() - t_start:.0f} s")
    noise_rows: list[str] = []
    for vn in ("H1", "H2"):
        clean_traces = per_variant[vn][f"prior + {DEFAULT_STRATEGY} (default)"]
        for name in ("one voter, 10 % slips", "one voter, 20 % slips", "three voters, 15 % slips"):
            for label, params in (("noise model (default)", ClassifierParams()), ("every vote trusted", trusting)):
                traces = run_all(Explorer(stores[vn], params=params), tasks[vn], SCENARIOS[name])
                noise_rows.append(summary_row(f"{vn}: {name}, {label}", traces, clean_traces))
    _log(f"H1/H2 noise rows done at {time.perf_counter() - t_start:.0f} s")

    # Data A (the old, easy data): the default only, for continuity.
    store_a = NumpyStore(data_a.vectors.shape[1])
    store_a.insert(data_a.batch())
    rng = np.random.default_rng(1)
    ids_a = np.asarray(data_a.ids)
    tasks_a = [
        Task(f"A-c{c}", data_a.text_vectors[c], set(ids_a[data_a.labels == c]), set())
        for c in sorted(rng.choice(len(data_a.text_vectors), size=min(n_tasks, len(data_a.text_vectors)), replace=False))
    ]
    traces_a = run_all(Explorer(store_a), tasks_a, clean)
    a_row = summary_row("data A: prior + mixed (default)", traces_a)

    # The product's embedded store at 25k rows: what 🔁 Refine costs (fit + next batch).
    with tempfile.TemporaryDirectory() as tmp:
        chdb = open_chdb(Path(tmp), datas[HARDEST].vectors.shape[1])
        try:
            chdb.insert(datas[HARDEST].batch())
            chdb_traces = run_all(Explorer(chdb), tasks[HARDEST][: 10 if quick else 20], clean)
        finally:
            chdb.close()
    _log(f"chDB done at {time.perf_counter() - t_start:.0f} s")

    hardest = per_variant[HARDEST][f"prior + {DEFAULT_STRATEGY} (default)"]
    p9_r3 = _mean(hardest, "p9", 3)
    def gap(vn: str, name: str) -> float:
        return _mean(per_voters[vn][name], "p9", ROUNDS) - _mean(per_voters[vn]["one voter, clean"], "p9", ROUNDS)

    s3 = {vn: gap(vn, "three voters, 15 % slips") for vn in VOTER_VARIANTS}
    s20 = {vn: gap(vn, "one voter, 20 % slips") for vn in VOTER_VARIANTS}
    s10 = {vn: gap(vn, "one voter, 10 % slips") for vn in VOTER_VARIANTS}
    held = per_variant[HELD_OUT][f"prior + {DEFAULT_STRATEGY} (default)"]
    below_any = {
        v.name: _ever_below(per_variant[v.name][f"prior + {DEFAULT_STRATEGY} (default)"], "results9") for v in VARIANTS
    }
    reshown = sum(t.reshown for vn in per_voters.values() for ts in vn.values() for t in ts) + sum(
        t.reshown for vn in per_variant.values() for ts in vn.values() for t in ts
    )
    fit_next = statistics.median([s for t in chdb_traces for s in t.fit_next_s]) * 1e3

    best_r3 = {
        vn: max(
            (label for label in runs if "original" not in label and "no guards" not in label),
            key=lambda label: _mean(runs[label], "p9", 3),
        )
        for vn, runs in per_variant.items()
    }
    default_label = f"prior + {DEFAULT_STRATEGY} (default)"
    behind = {
        vn: _mean(per_variant[vn][b], "p9", 3) - _mean(per_variant[vn][default_label], "p9", 3)
        for vn, b in best_r3.items()
        if b != default_label
    }
    strategy_text = (
        "Among the round strategies the default (mixed) is best or tied at round 3 on "
        + ", ".join(vn for vn in per_variant if vn not in behind)
        + (
            "; "
            + ", ".join(f"on {vn} {best_r3[vn]} is ahead by {d:.3f}" for vn, d in behind.items())
            + "."
            if behind
            else "."
        )
    )

    def goal(ok: bool) -> str:
        return "met" if ok else "**missed**"

    variants_text = "\n".join(f"- **{v.name}** (seed {v.config.seed}): {v.note}." for v in VARIANTS)
    text = f"""## Labelling loop: few-shot learning quality in real sessions

Simulated voters play the bot's loop through the calls the bot makes: `Explorer.next_batch` → every
voter votes 👍/👎 on the round → `core.votes.combine` (one-coin Dawid–Skene once voters overlap) →
`Explorer.fit` on the soft labels → `Explorer.top`. {ROUNDS} rounds of {K}, {n_tasks} concepts per variant, mean over
concepts. *p@9* / *p@50*: precision of the classifier's best 9 / 50 over all images (voted ones included);
*⭐ Results p@9*: what ⭐ Results shows at that moment (the bot refits on every vote before ranking,
👎 images left out, no near-duplicates); round 0 = zero-shot (the text vector). *Below zero-shot*: share
of concepts whose p@9 is below their own zero-shot p@9. *Sessions ended early*: `next_batch` found
nothing unlabelled above the decision boundary ("nothing else here looks like …") before round {ROUNDS}.
Times are medians on a shared 2-core x86-64 CPU (other jobs running, one BLAS thread): compare within
a table.

### The data: harder than data A

`core.synthetic.generate` with {n_images} images of 60 concepts (512-d, modality gap, Zipf class sizes), where the
person wants only some of a concept's visual modes (the other modes of the same concept are 👎 for
them) and the text vector names the whole concept:

{variants_text}

### Round strategy, chosen on the harder data (one clean voter)

{SUMMARY_HEAD}
{chr(10).join(strategy_rows)}
{a_row}

### Default per round on the hardest variant ({HARDEST}, one clean voter)

{round_table(hardest)}

### Voters ({HARDEST}, the hardest, and {HELD_OUT}, held out; default)

Each voter votes on every image of every round; a slip flips a vote; "wants another mode": that
voter's 👍 are one of the concept's other modes. Votes are combined by `core.votes.combine`, as the bot does.
"every vote trusted (before)": the same voters with the noise model off (`ClassifierParams(flip_rate=None)`,
the fit before this change); "p@9 r5 vs clean" is against the clean run of the same variant.

{SUMMARY_HEAD}
{chr(10).join(scenario_rows)}

### The noise model, chosen on H1 and H2

The default reads votes as noisy evidence (flip rates fitted by EM, each vote weighed by how likely
it is right given the others, see `core/classifier.py`); its settings (prior flip rate 0.1, 1 pseudo-vote,
10 EM steps) were chosen on these two variants and then run unchanged on {HARDEST} and {HELD_OUT} above.

{SUMMARY_HEAD}
{chr(10).join(noise_rows)}

### Fit + next batch in the embedded chDB store ({n_images} rows, {HARDEST}, {len(chdb_traces)} concepts)

{round_table(chdb_traces)}

### Near-duplicates

A round or results album never holds two images with cosine ≥ {DUPLICATE_COSINE} (and a round never shows one that
close to an image already voted on). Distinct images never come that close in the synthetic data
(a sample of 2,000 images against all):

{duplicate_statistics({**datas, "A": data_a})}

The e2e test `test_an_album_never_holds_an_image_and_its_resized_copy` puts an image and a copy at
cosine > {DUPLICATE_COSINE} in the store and checks that neither a round nor ⭐ Results shows both, and that the
copy of a voted image is not shown later. What a resized copy scores with real CLIP is not measured
here (no real weights on this machine; the tiny test model maps every image to nearly the same
vector, distinct ones at 0.996); CLIP deduplication guides use thresholds of 0.95–0.99. {DUPLICATE_COSINE} sits far
above every distinct synthetic neighbour above and at the low end of that range, so it errs on the
side of keeping bursts out too.

### Goals ({HARDEST}, {n_tasks} concepts; {HELD_OUT} beside it)

| goal | measured | |
|---|---|---|
| p@9 after 3 rounds ≥ 0.90 | {HARDEST}: {p9_r3:.3f}; {HELD_OUT}: {_mean(held, "p9", 3):.3f} | {goal(p9_r3 >= 0.90)} |
| no concept below its zero-shot p@9 (⭐ Results) at any round, any variant (one clean voter) | {", ".join(f"{k}: {x:.0%}" for k, x in below_any.items())} of concepts ever below | {goal(max(below_any.values()) == 0)} |
| three voters, 15 % slips, within 0.03 of clean at round 5 | {", ".join(f"{k}: {x:+.3f}" for k, x in s3.items())} | {goal(s3[HARDEST] >= -0.03)} |
| one voter, 20 % slips, within 0.06 of clean at round 5 | {", ".join(f"{k}: {x:+.3f}" for k, x in s20.items())} | {goal(s20[HARDEST] >= -0.06)} |
| no image shown twice in a session | {reshown} re-shown in all runs | {goal(reshown == 0)} |
| fit + next batch ≤ 30 ms p50 at {n_images} in the embedded store | {fit_next:.1f} ms | {goal(fit_next <= 30)} |

Where a goal is missed, and why:

- **p@9 after 3 rounds** on {HARDEST} is {p9_r3:.3f}, {0.90 - p9_r3:.3f} short of 0.90 (it reaches {_mean(hardest, "p9", 4):.3f} after 4 rounds and
  {_mean(hardest, "p9", 5):.3f} after 5); on {HELD_OUT}, the same settings with another seed, it is {_mean(held, "p9", 3):.3f} ({_mean(held, "p9", 5):.3f} after 5),
  so the seed alone moves it by that much and {HELD_OUT} is the harder of the two. The person wants 1–2 of a concept's 3–4 modes and the text leans to the others and to
  unrelated concepts: zero-shot p@9 is {_mean(hardest, "p9", 0):.3f}. Per concept, p@9 is close to all or nothing: a session
  is at 0.0–0.2 until a round happens to hold an image of the wanted mode and at 0.9–1.0 one round after,
  so the mean at round 3 is mostly the share of concepts whose wanted mode has been found by then
  (often it ranks 10–50 after a round of 👎, between the round's best and its spread picks). Tried on
  H1 and H2 (the first two also on two more seeds of their settings), none better at round 3 (−0.04 to
  +0.01 on the mean, within the spread between concepts): spread picks denser near the top, 6 best
  instead of 5, a pool of 6 or 15 rounds' worth instead of 10, a round of spread picks only while there
  is no 👍; a one-sided trust region of 0.9 was clearly worse (−0.1), 0.97 no better.
  {strategy_text} On data A the default is at 1.0 from round 2.
- **Noisy voters** still cost far more than the goals allow. p@9 at round 5 against the clean run, with
  the noise model (and with every vote trusted, as before):
  {"; ".join(f"{vn}: one voter 10 % {s10[vn]:+.3f} ({trusted_gap[vn, 'one voter, 10 % slips']:+.3f}), 20 % {s20[vn]:+.3f} ({trusted_gap[vn, 'one voter, 20 % slips']:+.3f}), three voters 15 % {s3[vn]:+.3f} ({trusted_gap[vn, 'three voters, 15 % slips']:+.3f})" for vn in VOTER_VARIANTS)}.
  The noise model helps one voter most; for three voters, whose 2:1 majorities Dawid–Skene already
  weighs down, it changes little either way (within the spread between concepts). Per concept p@9 is
  close to all or nothing, and the loss is mostly concepts whose wanted mode is never found: a
  slipped 👍 in the first rounds, when it is the only 👍 or one of two, carries half of the loss (the
  two kinds of vote weigh half each, which is what lets a single true 👍 turn the classifier), so the
  next rounds look around the wrong images; leave-one-out cannot tell a lone slip from the lone first
  true 👍 of the wanted mode, since no other vote speaks for either. Once a few true 👍 agree with
  each other, the noise model does catch the slips: a slipped 👍 is weighed down rather than learned
  by heart, so it no longer sits in the best 9. Tried and not kept (measured on H1, most also on H2,
  some on two more seeds of their settings): a floor on the weight of a rare class (each 👍 weighing at most a sixth
  or a third of the loss) and weighing a distrusted vote down in absolute terms both stopped clean
  sessions from finding their mode (p@9 r5 0.92 → 0.40–0.45 on H1); soft targets instead of weights;
  per-vote flip rates from the Dawid–Skene agreement; equal weights for 3:0 and 2:1; a stronger
  prior (2 or 4, worse clean and no better noisy); never ending a session (+0.01).
  Slips can also end a session early ("sessions ended early"). The voter who wants another mode is
  outvoted and weighed down ({", ".join(f"{vn}: {gap(vn, 'three voters, one wants another mode'):+.3f}" for vn in VOTER_VARIANTS)} against the clean run).

Whole benchmark: {time.perf_counter() - t_start:.0f} s on a shared 2-core machine (another developer's benchmarks and tests ran at the same time).
"""
    for s in stores.values():
        s.close()
    return publish("labelling", text, quick)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
