"""Recall and speed of the suite's VectorIndex on simulated taste vectors ("people with similar taste").

Targets on 2 CPU cores: 1,000,000 users x 64 dims, recall@10 >= 0.95 at >= 5,000 queries/s; 10,000,000
users x 64 dims, recall@10 >= 0.95 at >= 10,000 queries/s within 8 GB (peak memory of the whole process).

    OPENBLAS_NUM_THREADS=1 RECSYS_FAISS_THREADS=2 \\
        python benchmarks/retrieval.py --users 10000000 [--dim 64] [--k 10] [--queries 10000] \\
        [--truth-queries 2000] [--kind auto|exact|hnsw|ivf|ivf_sq] [--sweep-nprobe 8,12,16] \\
        [--json] [--seed 0]

What it does:

1. Simulates clustered, unit-norm taste vectors (``clustered_taste_vectors``: 300 taste groups,
   per-user anisotropic noise).
2. Builds ``VectorIndex`` with the suite's defaults (or ``--kind`` and the tuning flags), timing the build
   and the process's memory before and after it.
3. Saves the index to a temporary folder (``save_index``): the index file's size is ``index_bytes``.
4. Asks for the k users most similar to each of ``--queries`` random users, excluding the user
   themself (``VectorIndex.search_positions``), in one batch; queries/s is the best of ``--repeats`` runs,
   wall clock.
5. Times raw FAISS on the same index and the same query vectors (``index.search`` for k + 1
   neighbours, nothing else), so ``overhead_ratio`` = suite qps / raw qps shows what the suite adds.
6. Recall@k of the first ``--truth-queries`` of those queries against exact search over the same
   vectors (``faiss.knn``, which reads them in place), tie-tolerant: a returned user counts as correct
   when their true similarity is at least the k-th exact similarity minus 1e-5. A sample, because exact
   search over ten million vectors takes about a second per ten queries on two cores.
7. With ``--sweep-nprobe 8,12,16`` (IVF kinds) or ``--sweep-ef-search 16,32,64`` (HNSW), measures 4-6
   again at each value on the same index, so one build shows the speed/recall trade-off.
8. Reports ``peak_rss_bytes``, the high-water mark of the whole process's resident memory: the
   simulated vectors (n x d x 4 bytes, which a caller holds anyway), the index, building and searching.

The machine's 1-minute load average is reported before and after: other processes sharing the
cores lower queries/s, not recall. ``cpu_bound_qps`` (queries per CPU-second of this process times
the FAISS thread count) estimates the rate with the cores to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from recsys.errors import UserError
from recsys.retrieval import VectorIndex, clustered_taste_vectors, save_index, tie_tolerant_recall
from recsys.threads import configure_faiss_threads

#: Queries per call of the exact search, so its result heaps stay small.
_TRUTH_CHUNK = 500


def exact_neighbour_scores(vectors: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """(n_queries, k) exact top-k similarities of each query row to the other rows, best first.

    ``faiss.knn`` searches the array in place, so no second copy of the vectors is made.
    """
    scores = np.empty((len(query_rows), k + 1), np.float32)
    positions = np.empty((len(query_rows), k + 1), np.int64)
    for start in range(0, len(query_rows), _TRUTH_CHUNK):
        rows = query_rows[start : start + _TRUTH_CHUNK]
        found = faiss.knn(
            np.ascontiguousarray(vectors[rows]), vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT
        )
        scores[start : start + len(rows)], positions[start : start + len(rows)] = found
    # Drop the query itself; if an identical twin pushed it out of the top k + 1, drop the last instead.
    is_self = positions == query_rows[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    return scores[~is_self].reshape(len(query_rows), k)


def best_seconds_interleaved(runs: list, repeats: int) -> list[tuple[float, float]]:
    """Fastest (wall-clock seconds, process CPU seconds) of each of ``runs`` over ``repeats`` rounds.

    The runs alternate, so that both see the same background load; the fastest round is the one
    least disturbed by other processes. CPU seconds are those of the fastest round.
    """
    best = [(float("inf"), float("inf"))] * len(runs)
    for _ in range(repeats):
        for position, run_once in enumerate(runs):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            run_once()
            timing = (time.perf_counter() - wall_start, time.process_time() - cpu_start)
            best[position] = min(best[position], timing)
    return best


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux), or None where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def index_params(index: VectorIndex) -> dict:
    """The parameters that matter for the kind actually built."""
    if index.kind_ == "hnsw":
        return {"M": index.hnsw_m, "efConstruction": index.ef_construction, "efSearch": index.ef_search}
    if index.kind_ == "ivf":
        return {"nlist": int(index.faiss_index.nlist), "nprobe": int(index.faiss_index.nprobe)}
    if index.kind_ == "ivf_sq":
        refined = index.refine
        ivf = faiss.downcast_index(index.faiss_index.base_index) if refined else index.faiss_index
        quantizer = faiss.downcast_index(ivf.quantizer)
        params = {
            "nlist": int(ivf.nlist),
            "nprobe": int(ivf.nprobe),
            "sq_bits": index.sq_bits,
            "refine_factor": float(index.faiss_index.k_factor) if refined else "none",
        }
        if isinstance(quantizer, faiss.IndexHNSW):
            params["quantizer_efSearch"] = int(quantizer.hnsw.efSearch)
        return params
    return {}


def measure(
    index: VectorIndex,
    vectors: np.ndarray,
    query_rows: np.ndarray,
    exact_scores: np.ndarray,
    *,
    k: int,
    repeats: int,
    threads: int,
) -> dict:
    """Speed of the suite and of raw FAISS on the same index and queries, and the suite's recall.

    Recall is over the first ``len(exact_scores)`` queries, whose exact top-k scores are given.
    """
    query_vectors = np.ascontiguousarray(vectors[query_rows])
    raw = index.faiss_index
    result = None

    def suite_search() -> None:
        nonlocal result
        result = index.search_positions(query_rows, k)

    def raw_search() -> None:
        raw.search(query_vectors, k + 1)

    suite_search()  # warm-up: page in the index
    raw_search()
    (suite_seconds, suite_cpu_seconds), (raw_seconds, _) = best_seconds_interleaved(
        [suite_search, raw_search], repeats
    )
    n_truth = len(exact_scores)
    found_rows = result.positions
    found_scores = np.einsum("qd,qkd->qk", query_vectors[:n_truth], vectors[found_rows[:n_truth]])
    qps = len(query_rows) / suite_seconds
    raw_qps = len(query_rows) / raw_seconds
    return {
        "recall": round(tie_tolerant_recall(found_scores, exact_scores), 5),
        "qps": round(qps, 1),
        "raw_faiss_qps": round(raw_qps, 1),
        "overhead_ratio": round(qps / raw_qps, 4),
        # What the suite would reach with the threads to itself: queries per CPU-second x threads.
        "cpu_bound_qps": round(len(query_rows) / suite_cpu_seconds * threads, 1),
        # How far the returned scores are from the true similarities (0 up to rounding unless unrefined codes).
        "max_score_error": round(float(np.abs(found_scores - result.scores[:n_truth]).max()), 6),
        "params": index_params(index),
        "self_returned": int((found_rows == query_rows[:, None]).sum()),
        "rows_with_duplicates": int(sum(len(set(row)) != k for row in found_rows.tolist())),
    }


def run(args: argparse.Namespace) -> dict:
    threads = configure_faiss_threads(args.threads)
    load_before = load_average()
    start = time.perf_counter()
    vectors = clustered_taste_vectors(
        args.users,
        args.dim,
        n_clusters=args.clusters,
        noise=args.noise,
        spectrum_decay=args.spectrum_decay,
        seed=args.seed,
    )
    simulate_seconds = time.perf_counter() - start

    overrides = {
        name: value
        for name, value in {
            "hnsw_m": args.hnsw_m,
            "ef_construction": args.ef_construction,
            "ef_search": args.ef_search,
            "nlist": args.nlist,
            "nprobe": args.nprobe,
            "sq_bits": args.sq_bits,
            "refine": args.refine,
            "refine_factor": args.refine_factor,
        }.items()
        if value is not None
    }
    index = VectorIndex(kind=args.kind, device=args.device, **overrides)
    rss_before_build = current_rss_bytes()
    start = time.perf_counter()
    index.build(vectors, progress=not args.json)
    build_seconds = time.perf_counter() - start
    rss_after_build = current_rss_bytes()
    peak_rss_after_build = peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="recsys-retrieval-bench-") as folder:
        start = time.perf_counter()
        index_bytes = save_index(index, Path(folder) / "users.faiss").stat().st_size
        save_seconds = time.perf_counter() - start

    rng = np.random.default_rng(args.seed + 1)
    query_rows = rng.choice(args.users, size=min(args.queries, args.users), replace=False)
    truth_rows = query_rows[: args.truth_queries]
    start = time.perf_counter()
    exact_scores = exact_neighbour_scores(vectors, truth_rows, args.k)
    truth_seconds = time.perf_counter() - start

    def measure_now() -> dict:
        return measure(
            index, vectors, query_rows, exact_scores, k=args.k, repeats=args.repeats, threads=threads
        )

    measured = measure_now()
    sweep = []
    for name, values in (("nprobe", args.sweep_nprobe), ("ef_search", args.sweep_ef_search)):
        for value in values or []:
            index.set_search_params(**{name: value})
            sweep.append({name: value, **measure_now()})
    return {
        f"recall_at_{args.k}": measured["recall"],
        **{key: measured[key] for key in ("qps", "raw_faiss_qps", "overhead_ratio")},
        "build_seconds": round(build_seconds, 2),
        "users": args.users,
        "dim": args.dim,
        "kind": index.kind_,
        "k": args.k,
        "queries": len(query_rows),
        "truth_queries": len(truth_rows),
        "index_bytes": index_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_after_build_bytes": peak_rss_after_build,
        "rss_before_build_bytes": rss_before_build,
        "rss_after_build_bytes": rss_after_build,
        "vectors_bytes": int(vectors.nbytes),
        "max_score_error": measured["max_score_error"],
        "params": measured["params"],
        "device": index.device_,
        "threads": threads,
        "cpu_bound_qps": measured["cpu_bound_qps"],
        "seed": args.seed,
        "simulation": {"clusters": args.clusters, "noise": args.noise, "spectrum_decay": args.spectrum_decay},
        "repeats": args.repeats,
        "self_returned": measured["self_returned"] + sum(row["self_returned"] for row in sweep),
        "rows_with_duplicates": measured["rows_with_duplicates"]
        + sum(row["rows_with_duplicates"] for row in sweep),
        "sweep": sweep,
        "simulate_seconds": round(simulate_seconds, 2),
        "save_seconds": round(save_seconds, 2),
        "truth_seconds": round(truth_seconds, 2),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "faiss_version": faiss.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


def print_report(report: dict) -> None:
    k = report["k"]
    params = ", ".join(f"{name}={value}" for name, value in report["params"].items())
    print(
        f"{report['users']:,} users x {report['dim']} dims, {report['kind']}"
        f"{f' ({params})' if params else ''} on {report['device']}, {report['threads']} FAISS threads"
    )
    print(f"build            {report['build_seconds']:.1f} s")
    print(
        f"recall@{k}        {report[f'recall_at_{k}']:.4f}  (tie-tolerant, vs exact search, "
        f"{report['truth_queries']:,} of the queries, self excluded)"
    )
    print(
        f"scores           largest error {report['max_score_error']:.2g}  (returned score vs true similarity)"
    )
    print(
        f"suite qps        {report['qps']:,.0f}  (VectorIndex.search_positions, one batch, best of {report['repeats']})"
    )
    print(
        f"raw faiss qps    {report['raw_faiss_qps']:,.0f}  (index.search for k + 1 on the same index and queries)"
    )
    print(f"overhead ratio   {report['overhead_ratio']:.3f}  (suite qps / raw qps)")
    print(
        f"cpu-bound qps    {report['cpu_bound_qps']:,.0f}  (queries per CPU-second x {report['threads']} threads: "
        "the suite's qps with the cores to itself)"
    )
    gib = 1024**3
    growth = (
        f", the index added {(report['rss_after_build_bytes'] - report['rss_before_build_bytes']) / gib:.2f} GiB"
        if report["rss_before_build_bytes"] is not None and report["rss_after_build_bytes"] is not None
        else ""
    )
    print(
        f"index file       {report['index_bytes'] / gib:.2f} GiB  (saved in {report['save_seconds']:.1f} s)"
    )
    print(
        f"peak memory      {report['peak_rss_bytes'] / gib:.2f} GiB  (whole process, peak RSS; "
        f"{report['peak_rss_after_build_bytes'] / gib:.2f} GiB by the end of the build{growth}; "
        f"the simulated vectors alone: {report['vectors_bytes'] / gib:.2f} GiB)"
    )
    if report["sweep"]:
        print(f"sweep            recall@{k}   suite qps   raw qps   cpu-bound qps   params")
        for row in report["sweep"]:
            params = ", ".join(f"{name}={value}" for name, value in row["params"].items())
            print(
                f"                 {row['recall']:.4f}  {row['qps']:>10,.0f}  {row['raw_faiss_qps']:>8,.0f}  "
                f"{row['cpu_bound_qps']:>14,.0f}   {params}"
            )
    print(f"load average     {report['load_average_before']} before, {report['load_average_after']} after")
    if report["self_returned"] or report["rows_with_duplicates"]:
        print(
            f"ERROR: {report['self_returned']} results returned the query itself, "
            f"{report['rows_with_duplicates']} rows repeat a neighbour"
        )


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, required=True, help="number of simulated users (vectors)")
    parser.add_argument("--dim", type=int, default=64, help="taste vector dimension (default 64)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument(
        "--queries", type=int, default=10_000, help="queries in the timed batch (default 10,000)"
    )
    parser.add_argument(
        "--truth-queries",
        type=int,
        default=2_000,
        help="queries whose recall is checked against exact search (default 2,000, at most --queries)",
    )
    parser.add_argument("--kind", choices=["auto", "exact", "hnsw", "ivf", "ivf_sq"], default="auto")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=300, help="simulated taste groups (default 300)")
    parser.add_argument(
        "--noise", type=float, default=0.5, help="norm of a user's deviation from their group"
    )
    parser.add_argument(
        "--spectrum-decay",
        type=float,
        default=0.5,
        help="noise spectrum decay; 0 is isotropic noise, the hardest case for approximate search",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each search; the fastest counts"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="FAISS threads (default: RECSYS_FAISS_THREADS, OMP_NUM_THREADS or the cores available)",
    )
    parser.add_argument("--hnsw-m", type=int, default=None)
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--ef-search", type=int, default=None)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--sq-bits", type=int, choices=[4, 6, 8, 16], default=None, help="ivf_sq code bits")
    parser.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ivf_sq: re-rank with the full vectors (default) or not",
    )
    parser.add_argument("--refine-factor", type=float, default=None, help="ivf_sq candidates per neighbour")
    parser.add_argument(
        "--sweep-nprobe",
        type=_int_list,
        default=None,
        help="after the main run, measure again at each of these comma-separated nprobe values (IVF kinds)",
    )
    parser.add_argument(
        "--sweep-ef-search",
        type=_int_list,
        default=None,
        help="after the main run, measure again at each of these comma-separated efSearch values (HNSW)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if (
        args.users < 2
        or args.dim < 1
        or args.k < 1
        or args.k > args.users - 1
        or args.queries < 1
        or args.truth_queries < 1
        or args.repeats < 1
    ):
        parser.error(
            "need --users >= 2, --dim >= 1, 1 <= --k <= users - 1, --queries >= 1, --truth-queries >= 1 "
            "and --repeats >= 1"
        )
    try:
        report = run(args)
    except UserError as error:  # a bad index parameter: one line, exit 2
        parser.error(str(error))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 1 if report["self_returned"] or report["rows_with_duplicates"] else 0


if __name__ == "__main__":
    sys.exit(main())
