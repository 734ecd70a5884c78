"""``recsys leaderboard``: fit models and evaluate them under one protocol."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from experiments.tuning import DEFAULT_STUDY_PREFIX
from recsys.cli.common import (
    add_command,
    add_data_arguments,
    add_models_argument,
    add_tracking_arguments,
    add_workspace_argument,
    check_params,
    dataset_from_args,
    int_list,
    name_list,
    parse_params,
    positive_int,
)
from recsys.errors import UserError
from recsys.evaluation.elicitation import ELICITATION_SHOTS, STRATEGIES
from recsys.evaluation.evaluator import DEFAULT_DRAWS
from recsys.evaluation.protocols import PROTOCOLS, get_protocol, read_id_file, split_for_protocol
from recsys.extras import require


def jobs_value(text: str) -> int | str:
    """``--jobs``: auto or a positive integer."""
    if text == "auto":
        return text
    return positive_int(text)


def add_parsers(subparsers) -> None:
    """Add the ``leaderboard`` command."""
    board = add_command(subparsers, "leaderboard")
    add_data_arguments(board)
    add_models_argument(board, "all (on choices also the choices group)")
    board.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="default",
        help="a named protocol: default (the suite's), or piaa (fixed test users, 10 and 100 shots, 10 draws, "
        "each k scored on all the user's other ratings, every rating of the test users' images kept out of "
        "training); --shots, --draws and --splits override its values",
    )
    board.add_argument(
        "--test-users",
        type=Path,
        default=None,
        help="with --protocol piaa: a published split's test users, one user id per line (default: a seed-0 "
        "draw among the users with enough ratings)",
    )
    board.add_argument(
        "--test-images",
        type=Path,
        default=None,
        help="with --protocol piaa: a published split's test images, one image id per line, kept out of "
        "training; the test users are scored on their ratings of them (default: every image a test user rated)",
    )
    board.add_argument(
        "--shots",
        type=int_list,
        default=None,
        help="reference ratings per new user (default None: the protocol's, 0,10 by default); with three or "
        "more values curve.csv and curve.png are written",
    )
    board.add_argument(
        "--draws",
        type=positive_int,
        default=None,
        help=f"reference draws per new user, the same for every model (per-user values are averaged over them; "
        f"default None: the protocol's, {DEFAULT_DRAWS} by default)",
    )
    board.add_argument(
        "--references",
        choices=STRATEGIES,
        default="random",
        help="how a new user's references are chosen from the pool (the ratings kept out of the queries): "
        "random, or a strategy asking one image at a time from the answers so far (disagreement, uncertainty, "
        "coverage); the queries are those of random references; a strategy's default --shots is 1..20",
    )
    board.add_argument(
        "--reference-pool",
        type=positive_int,
        default=None,
        help="ratings of each new user kept out of the queries for the references to be chosen from (default "
        "None: the largest k); the same value gives the same queries whatever --references",
    )
    board.add_argument(
        "--task",
        choices=("predict", "topn"),
        default="predict",
        help="predict: predicted scores (or choices) against held-out ones; topn: rank every image a seen user has "
        "not rated in train or val_seen, recall@k and ndcg@k against the user's held-out images rated at or above "
        "--relevant-at, beside a label-free popularity row",
    )
    board.add_argument(
        "--topn-k",
        type=int_list,
        default=[10, 20],
        help="cut-offs k of recall@k and ndcg@k (--task topn)",
    )
    board.add_argument(
        "--relevant-at",
        type=float,
        default=None,
        help="held-out scores at or above it are relevant (--task topn; default None: three quarters up the "
        "score range, 4 on 1-5)",
    )
    board.add_argument(
        "--splits",
        type=name_list,
        default=None,
        help="splits to evaluate on (default: the protocol's; by default those of test_seen, test_unseen the "
        "data have)",
    )
    board.add_argument(
        "--jobs",
        type=jobs_value,
        default="auto",
        help="worker processes fitting models side by side (auto: 2 on a multi-core machine when the run has at "
        "least 4 models and 20,000 ratings, else 1; each worker then runs its numeric libraries on one thread)",
    )
    board.add_argument(
        "--params", default=None, help='JSON hyperparameters per model, e.g. {"ridge": {"alpha": 10}}'
    )
    add_workspace_argument(board)
    board.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the set into this folder instead (refused when it is not empty, unless --overwrite); "
        "default: WORKSPACE/leaderboards/<UTC time>-<run id>/, with WORKSPACE/leaderboards/latest pointing at it",
    )
    board.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out folder (the old set is replaced whole)",
    )
    board.add_argument(
        "--tuned",
        action="store_true",
        help="use the best study parameters of each model that has a study (--params override them), the others "
        "at their defaults (marked so); every row fits on the same splits as without --tuned; a study made on "
        "other data or under another protocol is refused",
    )
    board.add_argument(
        "--storage",
        default=None,
        help="Optuna storage of the studies; default: sqlite:///WORKSPACE/optuna.db",
    )
    board.add_argument("--study-prefix", default=DEFAULT_STUDY_PREFIX, help="studies are named PREFIX-MODEL")
    add_tracking_arguments(board, "the leaderboard")
    board.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from experiments.reported import reported_table_markdown
    from recsys.leaderboard import run_leaderboard
    from recsys.models.registry import expand_models
    from recsys.report import format_table, write_leaderboard
    from recsys.workspace import (
        LEADERBOARDS,
        check_target,
        check_writable,
        leaderboard_dir,
        resolve_workspace,
        sqlite_url,
        update_latest,
    )

    if args.tuned:  # the extras a run needs, before any work
        require("experiments", "recsys leaderboard --tuned")
    if not args.no_tracking:
        require("experiments", "tracking the leaderboard in MLflow", ", or pass --no-tracking")
    workspace = resolve_workspace(args.workspace)
    params = parse_params(args.params, per_model=True)
    check_params(params, expand_models(args.models) if args.models else None)  # before the data is read
    if args.out is not None:
        check_target(args.out, args.overwrite)  # before any model is fitted
    # a read-only or full place fails now, in one line, not after every model is fitted
    check_writable(args.out.absolute().parent if args.out is not None else workspace / LEADERBOARDS)
    preset = get_protocol(args.protocol)
    test_users = read_id_file(args.test_users, "--test-users") if args.test_users else None
    test_images = read_id_file(args.test_images, "--test-images") if args.test_images else None
    if (test_users or test_images) and preset.name != "piaa":
        raise UserError("--test-users and --test-images apply to --protocol piaa only")
    ds, split_note = split_for_protocol(
        dataset_from_args(args), preset, test_users=test_users, test_images=test_images
    )
    protocol = {
        "splits": args.splits or preset.splits,
        # the default protocol's shots depend on the data (ratings: 0,10; choices: 0,1,2,4,8)
        "shots": args.shots
        or (list(ELICITATION_SHOTS) if args.references != "random" else None)
        or (None if preset.name == "default" else list(preset.shots)),
        "seed": args.seed,
        "draws": args.draws or preset.draws,
        "params": params,
        "protocol": preset.name,
        "fixed_queries": preset.fixed_queries,
        "jobs": args.jobs,
        "references": args.references,
        "reference_pool": args.reference_pool,
        "protocol_note": split_note,
    }
    if args.task == "topn":
        protocol |= {"task": "topn", "topn_ks": args.topn_k, "relevant_at": args.relevant_at}
    if args.tuned:
        from experiments.tuning import run_tuned_leaderboard

        board = run_tuned_leaderboard(
            ds,
            args.models,
            storage=args.storage or sqlite_url(workspace, "optuna.db"),
            study_prefix=args.study_prefix,
            **protocol,
        )
    else:
        board = run_leaderboard(ds, args.models, **protocol)
    target = args.out if args.out is not None else leaderboard_dir(workspace, board.run_id)
    # published numbers are context for PAMELA-format data and for the PIAA protocol only
    extra = reported_table_markdown() if ds.pamela_semantics or preset.name == "piaa" else ""
    paths = write_leaderboard(board, target, overwrite=args.overwrite, markdown_extra=extra)
    latest = update_latest(target) if args.out is None else None
    print(format_table(board))
    print(f"\nwrote run {board.run_id} to {target}: {', '.join(p.name for p in paths.values())}")
    if latest is not None:
        print(f"{latest} now points at {target.name}")
    if not args.no_tracking:
        from experiments.tracking import log_leaderboard, resolve_tracking_uri

        tracking_uri = (
            args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_url(workspace, "mlflow.db")
        )
        try:
            run_id = log_leaderboard(board, paths, tracking_uri=tracking_uri)  # tagged with board.run_id
        except UserError:
            raise
        except Exception as err:  # MLflow and SQLAlchemy errors: a full or read-only store, a lost server
            raise UserError(
                f"run {board.run_id} is written to {target}, but logging it to MLflow at {tracking_uri} failed "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); rerun with --no-tracking, or fix the store"
            ) from None
        print(
            f"tracked as MLflow run {run_id} in {resolve_tracking_uri(tracking_uri)} (open with `mlflow ui`)"
        )
    return 0
