"""The suite's models beside scikit-surprise on a public rating table nobody here wrote (MovieLens-100k).

MovieLens-100k is fetched at run time from the PyPI wheel that ships it (``recbole==1.2.1``,
``recbole/dataset_example/ml-100k/ml-100k.inter``) with ``pip download`` into a temporary directory; its
licence forbids redistribution, so nothing of it is written under the repository. One seeded split (a
``--test-fraction`` of ratings to test) gives identical train and test ratings to Surprise and to the suite,
and one metric code (``recsys.evaluation.metrics``) scores both. Test pairs whose user or item has no training
rating are dropped for every method (the count is printed): a model without item features cannot score them,
and Surprise would fall back to the global mean. Surprise's predictions are clipped to the rating scale (its
default), as biases, mf and item_knn clip theirs. Only ratings are given to every method: a suite model
that needs image features or metadata is listed as skipped.

    OPENBLAS_NUM_THREADS=1 python benchmarks/peers.py [--models classical] [--peers SVD,KNNBaseline]
        [--seed 0] [--wheel recbole-1.2.1-py3-none-any.whl] [--out runs/peers.json]

Needs the ``bench`` extra (``pip install -e ".[bench]"``: scikit-surprise).
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
    parser.add_argument("--models", default="classical", help="suite models or groups (default: classical)")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"Surprise algorithms (default: {','.join(PEERS)})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every seeded model")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--wheel", type=Path, default=None, help="an already downloaded recbole-1.2.1 wheel")
    parser.add_argument("--out", type=Path, default=Path("runs/peers.json"), help="where the JSON goes")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if peers:
        try:
            import surprise  # noqa: F401
        except ImportError:
            raise SystemExit('scikit-surprise is not installed: pip install -e ".[bench]"') from None
    models = expand_models(args.models.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        table = read_movielens(wheel)
        is_test = split_table(table, args.test_fraction, args.seed)
        train, test = table[~is_test], table[is_test]
        # every method scores the same pairs: those whose user and item have training ratings
        known = test.user_id.isin(train.user_id) & test.item_id.isin(train.item_id)
        dropped = int((~known).sum())
        test = test[known]
        # the suite reads the same split as a rating table with a split column (in the temporary directory)
        frame = pd.concat([train.assign(split="train"), test.assign(split="test_seen")])
        frame.to_csv(Path(tmp) / "ratings.csv", index=False)
        rows, skipped = [], []
        for name in peers:
            pred, fit_seconds = run_peer(name, train, test, args.seed)
            row = {"library": "scikit-surprise", "model": name, "fit_seconds": fit_seconds}
            rows.append(row | scores(test.score.to_numpy(), pred, test.user_id.to_numpy()))
            print(_line(rows[-1]), flush=True)
        dataset = load_dataset(Path(tmp) / "ratings.csv")
        truth = dataset.ratings["test_seen"]
        for name in models:
            try:
                pred, fit_seconds = run_suite(name, dataset, args.seed)
            except UserError as err:  # e.g. a model that needs image features or metadata
                skipped.append({"library": "recsys", "model": name, "reason": str(err)})
                print(f"recsys           {name:14s} cannot run on a rating table alone: {err}", flush=True)
                continue
            row = {"library": "recsys", "model": name, "fit_seconds": fit_seconds}
            rows.append(row | scores(truth.score, pred, truth.user_idx))
            print(_line(rows[-1]), flush=True)

    result = {
        "dataset": "MovieLens-100k (recbole 1.2.1 wheel)",
        "ratings": len(table),
        "train": len(train),
        "test": len(test),
        "test_dropped_unknown": dropped,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
        "skipped": skipped,
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
    print(f"{'library':16s} {'model':14s} {'RMSE':>7s} {'MAE':>7s} {'user SROCC':>10s} {'fit s':>8s}")
    for row in sorted(rows, key=lambda r: r["rmse"]):
        print(_line(row))
    for row in skipped:
        print(f"{row['library']:16s} {row['model']:14s} skipped: needs side information the table lacks")
    for verdict in result["verdicts"]:
        print(verdict)
    print(f"written {args.out}")


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
