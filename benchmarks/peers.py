"""The suite's models beside the libraries people use, on a public rating table nobody here wrote (MovieLens-100k).

MovieLens-100k is fetched at run time from the PyPI wheel that ships it (``recbole==1.2.1``,
``recbole/dataset_example/ml-100k/ml-100k.inter``) with ``pip download`` into a temporary directory; its
licence forbids redistribution, so nothing of it is written under the repository. One seeded split (a
``--test-fraction`` of ratings to test) gives identical train and test ratings to Surprise and to the suite,
and one metric code (``recsys.evaluation.metrics``) scores both. Test pairs whose user or item has no training
rating are dropped for every method (the count is printed): a model without item features cannot score them,
and Surprise would fall back to the global mean. Surprise's predictions are clipped to the rating scale (its
default), as biases, mf and item_knn clip theirs. Only ratings are given to every method: a suite model
that needs image features or metadata is listed as skipped.

Top-N (``--task topn``), on the same split and the same train ratings: implicit's ALS and BPR, LightFM with the
WARP loss and Cornac's BPR, MF and EASE, beside the suite's models and the label-free popularity ranking. Each peer
gets every training rating as an interaction (1; Cornac's MF the rating itself) with its library's default
hyperparameters, one thread and the seed (LightFM: 30 epochs, as its MovieLens quickstart; its default is one);
the suite's models fit as they always do (als, bpr and lightfm on likes, score >= 4). Every method's scores go
through the suite's one top-N scorer (``recsys.evaluation.topn``): for each test user with a held-out rating of 4
or more, every item with a training rating that the user did not rate in train is ranked; recall@k and ndcg@k (k
= 10, 20) against the held-out items rated 4 or more, averaged over those users with a 95% bootstrap interval.

    OPENBLAS_NUM_THREADS=1 python benchmarks/peers.py [--task rating,topn] [--models classical]
        [--peers SVD,KNNBaseline] [--topn-peers implicit-ALS,cornac-BPR] [--seed 0]
        [--wheel recbole-1.2.1-py3-none-any.whl | --ratings ratings.csv] [--out runs/peers.json]

Needs the ``bench`` extra (``pip install -e ".[bench]"``: scikit-surprise, Cornac) and, for the top-N peers, the
``implicit`` extra.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from recsys.data import load_dataset  # noqa: E402
from recsys.errors import UserError  # noqa: E402
from recsys.evaluation.metrics import mae, rmse, user_srocc  # noqa: E402
from recsys.models import create_model  # noqa: E402
from recsys.models.registry import GROUPS, expand_models, model_class  # noqa: E402

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
#: the peers, as Surprise names them; the classical ones users pick today for explicit ratings
PEERS = ("BaselineOnly", "SVD", "SVD++", "KNNBaseline")
#: the top-N peers: library-model
TOPN_PEERS = ("implicit-ALS", "implicit-BPR", "LightFM-WARP", "cornac-BPR", "cornac-MF", "cornac-EASE")
#: cut-offs of the top-N metrics
TOPN_KS = (10, 20)


def fetch_wheel(directory: Path) -> Path:
    """``pip download`` the wheel that ships MovieLens-100k into ``directory``; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("recbole-*.whl"))
    if done.returncode or not wheels:
        raise UserError(f"pip download {WHEEL} failed: {done.stderr.strip().splitlines()[-1:]}")
    return wheels[0]


def read_movielens(wheel: Path) -> pd.DataFrame:
    """MovieLens-100k ratings (user_id, item_id, score) read from inside the wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(MEMBER).decode()
    except (KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"{wheel}: has no readable {MEMBER} ({err})") from None
    table = pd.read_csv(io.StringIO(text), sep="\t")
    table.columns = [c.split(":")[0] for c in table.columns]
    return pd.DataFrame(
        {"user_id": table["user_id"], "item_id": table["item_id"], "score": table["rating"].astype(float)}
    )


def split_table(table: pd.DataFrame, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded split: ``test_fraction`` of the ratings, drawn uniformly, are test; the rest train."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(table), dtype=bool)
    test[rng.permutation(len(table))[: round(test_fraction * len(table))]] = True
    return test


def run_peer(name: str, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[np.ndarray, float]:
    """Fit a Surprise algorithm with its default hyperparameters; (test predictions, fit seconds)."""
    import surprise

    algorithms = {
        "BaselineOnly": lambda: surprise.BaselineOnly(verbose=False),
        "SVD": lambda: surprise.SVD(random_state=seed),
        "SVD++": lambda: surprise.SVDpp(random_state=seed),
        "KNNBaseline": lambda: surprise.KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
        ),
    }
    reader = surprise.Reader(rating_scale=(train.score.min(), train.score.max()))
    trainset = surprise.Dataset.load_from_df(
        train[["user_id", "item_id", "score"]], reader
    ).build_full_trainset()
    algorithm = algorithms[name]()
    start = time.perf_counter()
    algorithm.fit(trainset)
    fit_seconds = time.perf_counter() - start
    pred = np.array(
        [
            algorithm.predict(u, i).est
            for u, i in zip(test.user_id.tolist(), test.item_id.tolist(), strict=True)
        ]
    )
    return pred, fit_seconds


def run_suite(name: str, dataset, seed: int) -> tuple[np.ndarray, float]:
    """Fit a registered model on the split's train ratings; (test predictions, fit seconds)."""
    params = {"seed": seed} if "seed" in model_class(name).param_names() else {}
    model = create_model(name, **params)
    start = time.perf_counter()
    model.fit(dataset)
    fit_seconds = time.perf_counter() - start
    test = dataset.ratings["test_seen"]
    return model.predict(test.user_idx, test.image_idx), fit_seconds


def scores(y_true: np.ndarray, y_pred: np.ndarray, user: np.ndarray) -> dict[str, float]:
    """The one metric code for every row."""
    return {
        "rmse": rmse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "user_srocc": user_srocc(y_true, y_pred, user),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="rating,topn", help="rating, topn or both (default: rating,topn)")
    parser.add_argument("--models", default="classical", help="suite models or groups (default: classical)")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"Surprise algorithms (default: {','.join(PEERS)})"
    )
    parser.add_argument(
        "--topn-peers",
        default=",".join(TOPN_PEERS),
        help=f"top-N peers (default: {','.join(TOPN_PEERS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every seeded model")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--wheel", type=Path, default=None, help="an already downloaded recbole-1.2.1 wheel")
    parser.add_argument(
        "--ratings",
        type=Path,
        default=None,
        help="read MovieLens-100k from this user_id,item_id,score CSV instead of the wheel",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/peers.json"), help="where the JSON goes")
    args = parser.parse_args()
    tasks = [t for t in args.task.split(",") if t]
    if not tasks or set(tasks) - {"rating", "topn"}:
        raise SystemExit(f"--task takes rating, topn or both, got {args.task!r}")
    peers = [p for p in args.peers.split(",") if p] if "rating" in tasks else []
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    topn_peers = [p for p in args.topn_peers.split(",") if p] if "topn" in tasks else []
    unknown = sorted(set(topn_peers) - set(TOPN_PEERS))
    if unknown:
        raise SystemExit(f"unknown top-N peer(s) {', '.join(unknown)}; choose from {', '.join(TOPN_PEERS)}")
    needed = {"surprise": peers, "cornac": [p for p in topn_peers if p.startswith("cornac")]}
    needed |= {"implicit": [p for p in topn_peers if p.startswith("implicit")]}
    needed |= {"lightfm": [p for p in topn_peers if p.startswith("LightFM")]}
    for module, users in needed.items():
        if users:
            try:
                __import__(module)
            except ImportError:
                raise SystemExit(f'{module} is not installed: pip install -e ".[bench,implicit]"') from None
    models = expand_models(args.models.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        if args.ratings is not None:
            table = read_ratings(args.ratings)
        else:
            table = read_movielens(args.wheel or fetch_wheel(Path(tmp)))
        is_test = split_table(table, args.test_fraction, args.seed)
        train, test = table[~is_test], table[is_test]
        # every method scores the same pairs: those whose user and item have training ratings
        known = test.user_id.isin(train.user_id) & test.item_id.isin(train.item_id)
        dropped = int((~known).sum())
        test = test[known]
        # the suite reads the same split as a rating table with a split column (in the temporary directory)
        frame = pd.concat([train.assign(split="train"), test.assign(split="test_seen")])
        frame.to_csv(Path(tmp) / "ratings.csv", index=False)
        dataset = load_dataset(Path(tmp) / "ratings.csv")
        rows, skipped = [], []
        if "rating" in tasks:
            rows, skipped = rating_rows(peers, models, train, test, dataset, args.seed)
        topn, topn_skipped = [], []
        if "topn" in tasks:
            topn, topn_skipped = topn_rows(topn_peers, models, dataset, args.seed)

    result = {
        "dataset": "MovieLens-100k "
        + (f"({args.ratings.name})" if args.ratings else "(recbole 1.2.1 wheel)"),
        "ratings": len(table),
        "train": len(train),
        "test": len(test),
        "test_dropped_unknown": dropped,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
        "skipped": skipped,
        "topn": {"ks": list(TOPN_KS), "relevant_at": 4.0, "rows": topn, "skipped": topn_skipped},
    }
    result["verdicts"] = verdicts(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(args.out)
    print()
    print(
        f"MovieLens-100k: {len(train)} train, {len(test)} test ratings (seed {args.seed}; {dropped} test "
        "ratings of users or items without training ratings dropped for every method)"
    )
    if rows or skipped:
        print(f"{'library':16s} {'model':14s} {'RMSE':>7s} {'MAE':>7s} {'user SROCC':>10s} {'fit s':>8s}")
        for row in sorted(rows, key=lambda r: r["rmse"]):
            print(_line(row))
        for row in skipped:
            print(f"{row['library']:16s} {row['model']:14s} skipped: needs side information the table lacks")
        for verdict in result["verdicts"]:
            print(verdict)
    if topn or topn_skipped:
        users = topn[0]["users"] if topn else 0
        print(
            f"\ntop-N: every item with a training rating that the user did not rate in train, ranked for each of "
            f"{users} test users with a held-out rating >= 4; relevant: those held-out items"
        )
        print(_topn_head())
        for row in sorted(topn, key=lambda r: -r["recall@10"]):
            print(_topn_line(row))
        for row in topn_skipped:
            print(f"{row['library']:16s} {row['model']:14s} skipped: {row['reason']}")
    print(f"written {args.out}")


def read_ratings(path: Path) -> pd.DataFrame:
    """A user_id,item_id,score CSV (MovieLens-100k as a plain table)."""
    table = pd.read_csv(path)
    missing = {"user_id", "item_id", "score"} - set(table.columns)
    if missing:
        raise SystemExit(f"{path}: lacks column(s) {', '.join(sorted(missing))}")
    return table[["user_id", "item_id", "score"]].astype({"score": float})


def rating_rows(peers, models, train, test, dataset, seed) -> tuple[list[dict], list[dict]]:
    """RMSE, MAE and user SROCC of every Surprise peer and suite model on the test ratings."""
    rows, skipped = [], []
    for name in peers:
        pred, fit_seconds = run_peer(name, train, test, seed)
        row = {"library": "scikit-surprise", "model": name, "fit_seconds": fit_seconds}
        rows.append(row | scores(test.score.to_numpy(), pred, test.user_id.to_numpy()))
        print(_line(rows[-1]), flush=True)
    truth = dataset.ratings["test_seen"]
    for name in models:
        try:
            pred, fit_seconds = run_suite(name, dataset, seed)
        except UserError as err:  # e.g. a model that needs image features or metadata
            skipped.append({"library": "recsys", "model": name, "reason": str(err)})
            print(f"recsys           {name:14s} cannot run on a rating table alone: {err}", flush=True)
            continue
        row = {"library": "recsys", "model": name, "fit_seconds": fit_seconds}
        rows.append(row | scores(truth.score, pred, truth.user_idx))
        print(_line(rows[-1]), flush=True)
    return rows, skipped


class PeerScores:
    """A peer's score of every (user, item) of the suite's dataset, read as the suite's scorer reads a model."""

    def __init__(self, name: str, scores: np.ndarray, fit_seconds: float):
        self.name, self.scores, self.fit_seconds = name, scores, fit_seconds
        self.fit_split_, self.validation_split_ = "train", None

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self.scores[user_idx, image_idx]


def fit_topn_peer(name: str, dataset, seed: int) -> PeerScores:
    """Fit a top-N peer on the training ratings of ``dataset`` (indices as the suite's) and score every pair."""
    import scipy.sparse as sp

    train = dataset.ratings["train"]
    shape = (dataset.n_users, dataset.n_images)
    interactions = sp.csr_matrix(
        (np.ones(len(train), np.float32), (train.user_idx, train.image_idx)), shape=shape
    )
    start = time.perf_counter()
    if name.startswith("implicit"):
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cls = AlternatingLeastSquares if name == "implicit-ALS" else BayesianPersonalizedRanking
        model = cls(num_threads=1, random_state=seed)
        model.fit(interactions, show_progress=False)
        fit_seconds = time.perf_counter() - start
        scores = np.asarray(model.user_factors) @ np.asarray(model.item_factors).T
    elif name == "LightFM-WARP":
        from lightfm import LightFM

        model = LightFM(loss="warp", random_state=seed)
        model.fit(interactions.tocoo(), epochs=30, num_threads=1)
        fit_seconds = time.perf_counter() - start
        users = np.repeat(np.arange(shape[0], dtype=np.int32), shape[1])
        items = np.tile(np.arange(shape[1], dtype=np.int32), shape[0])
        scores = model.predict(users, items, num_threads=1).reshape(shape)
    else:
        import cornac

        values = train.score if name == "cornac-MF" else np.ones(len(train))
        triples = list(
            zip(train.user_idx.astype(str), train.image_idx.astype(str), values.tolist(), strict=True)
        )
        data = cornac.data.Dataset.from_uir(triples, seed=seed)
        model = {
            "cornac-BPR": lambda: cornac.models.BPR(num_threads=1, seed=seed),
            "cornac-MF": lambda: cornac.models.MF(num_threads=1, seed=seed),
            "cornac-EASE": lambda: cornac.models.EASE(verbose=False, seed=seed),
        }[name]()
        model.fit(data)
        fit_seconds = time.perf_counter() - start
        items = np.empty(data.num_items, np.int64)
        for raw, inner in data.iid_map.items():
            items[inner] = int(raw)
        scores = np.zeros(shape)
        for raw, inner in data.uid_map.items():
            scores[int(raw), items] = model.score(inner)
    return PeerScores(name, np.asarray(scores, np.float64), fit_seconds)


def topn_rows(peers, models, dataset, seed) -> tuple[list[dict], list[dict]]:
    """recall@k and ndcg@k of every top-N peer, suite model and the popularity ranking, by the suite's one
    top-N scorer on the same candidates."""
    from recsys.evaluation.evaluator import Evaluator
    from recsys.evaluation.topn import Popularity, TopNScorer

    evaluator = Evaluator(dataset, shots=(0,), seed=seed, scorer=TopNScorer(TOPN_KS, relevant_at=4.0))
    rows, skipped = [], []

    def add(library: str, fitted, fit_seconds: float) -> None:
        result = evaluator.evaluate(fitted, "test_seen", fit_seconds=fit_seconds)
        if result.metrics is None:
            skipped.append(
                {"library": library, "model": fitted.name, "reason": f"{result.status}: {result.reason}"}
            )
            print(f"{library:16s} {fitted.name:14s} {result.status}: {result.reason}", flush=True)
            return
        rows.append(
            {"library": library, "model": fitted.name, "fit_seconds": fit_seconds}
            | result.metrics
            | {"ci95": result.ci95, "users": result.metric_users[f"recall@{TOPN_KS[0]}"]}
        )
        print(_topn_line(rows[-1]), flush=True)

    for name in peers:
        fitted = fit_topn_peer(name, dataset, seed)
        add(name.split("-")[0], fitted, fitted.fit_seconds)
    for name in models:
        params = {"seed": seed} if "seed" in model_class(name).param_names() else {}
        model = create_model(name, **params)
        start = time.perf_counter()
        try:
            model.fit(dataset)
        except UserError as err:  # e.g. a model that needs image features or metadata
            skipped.append({"library": "recsys", "model": name, "reason": str(err)})
            print(f"recsys           {name:14s} cannot run on a rating table alone: {err}", flush=True)
            continue
        add("recsys", model, time.perf_counter() - start)
    add("label-free", Popularity(dataset), 0.0)
    return rows, skipped


def _topn_head() -> str:
    cells = " ".join(f"{f'{m}@{k}':>22s}" for k in TOPN_KS for m in ("recall", "ndcg"))
    return f"{'library':16s} {'model':14s} {cells} {'fit s':>8s}"


def _topn_line(row: dict) -> str:
    cells = []
    for k in TOPN_KS:
        for metric in (f"recall@{k}", f"ndcg@{k}"):
            lo, hi = row["ci95"][metric]
            cells.append(f"{row[metric]:.3f} [{lo:.3f}, {hi:.3f}]".rjust(22))
    return f"{row['library']:16s} {row['model']:14s} {' '.join(cells)} {row['fit_seconds']:8.2f}"


def verdicts(rows: list[dict]) -> list[str]:
    """The two claims the table is for: the best classical model of the suite against the best Surprise
    algorithm, and mf against Surprise's SVD (RMSE, lower is better)."""
    peers = {r["model"]: r for r in rows if r["library"] == "scikit-surprise"}
    classical = {
        r["model"]: r for r in rows if r["library"] == "recsys" and r["model"] in GROUPS["classical"]
    }
    out = []
    if peers and classical:
        ours = min(classical.values(), key=lambda r: r["rmse"])
        theirs = min(peers.values(), key=lambda r: r["rmse"])
        verdict = "at or below" if ours["rmse"] <= theirs["rmse"] else "ABOVE"
        out.append(
            f"best classical {ours['model']} RMSE {ours['rmse']:.4f} is {verdict} the best Surprise "
            f"{theirs['model']} {theirs['rmse']:.4f}"
        )
    if "mf" in classical and "SVD" in peers:
        mf, svd = classical["mf"]["rmse"], peers["SVD"]["rmse"]
        out.append(f"mf RMSE {mf:.4f} is {'at or below' if mf <= svd else 'ABOVE'} SVD {svd:.4f}")
    return out


def _line(row: dict) -> str:
    return (
        f"{row['library']:16s} {row['model']:14s} {row['rmse']:7.4f} {row['mae']:7.4f} "
        f"{row['user_srocc']:10.4f} {row['fit_seconds']:8.2f}"
    )


if __name__ == "__main__":
    main()
