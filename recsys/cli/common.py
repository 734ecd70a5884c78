"""What every command group shares: argument types, the data flags, ``--params``, the help formatter."""

from __future__ import annotations

import argparse
import difflib
import json
import textwrap
from pathlib import Path

from recsys.cli.catalogue import COMMANDS
from recsys.errors import UserError
from recsys.extras import MissingExtra, require
from recsys.files import loads


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option's help ends with its default when it has one.

    Like ``argparse.ArgumentDefaultsHelpFormatter``, but a default of None or False (a flag, or "computed
    when absent", which the help text explains) is not printed, and lists print as ``a,b`` as typed.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default:" in text
            or "%(default)" in text
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        if isinstance(default, list | tuple):
            shown = ",".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_command(subparsers, name: str):
    """The sub-command ``name`` as ``recsys.cli.catalogue`` declares it: the shared formatter, its help in the
    parent's list and its examples (one invocation a line) as the epilog."""
    command = COMMANDS[name]
    lines = "\n".join(f"  {line}" for line in command.example.strip().splitlines())
    description = command.description or command.help[0].upper() + command.help[1:] + "."
    return subparsers.add_parser(
        name,
        help=command.help,
        description=textwrap.fill(description, width=78),
        epilog=f"example:\n{lines}",
        formatter_class=HelpFormatter,
    )


def add_commands(parser: argparse.ArgumentParser, dest: str, prefix: str):
    """The collection of sub-commands of ``parser`` (the top level or a command group), listed as "commands"."""
    return parser.add_subparsers(
        dest=dest,
        required=True,
        title="commands",
        metavar="COMMAND",
        help=f"`{prefix} COMMAND --help` describes a command and its options",
    )


# ---------------------------------------------------------------------- argument types
def int_list(text: str) -> list[int]:
    """``0,10`` -> [0, 10]: comma-separated non-negative integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    """``a, b`` -> ["a", "b"]: a non-empty comma-separated list of names."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return values


def score_range(text: str) -> tuple[float, float]:
    """``1,5`` -> (1.0, 5.0): LOW,HIGH with LOW < HIGH."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return lo, hi


def int_at_least(minimum: int, wording: str):
    """An argparse type for integers >= ``minimum``; ``wording`` names the expectation in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, sizes)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ---------------------------------------------------------------------- --params
def parse_params(text: str | None, *, per_model: bool = False) -> dict:
    """The ``--params`` JSON: hyperparameters of one model, or (``per_model``) an object of them per model.

    Invalid JSON, a non-object, or (``per_model``) a model's value that is not an object is a one-line
    ``UserError``.
    """
    if not text:
        return {}
    example = '{"ridge": {"alpha": 10}}' if per_model else '{"alpha": 10}'
    try:
        params = loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--params is not valid JSON: {err}; e.g. {example}") from None
    if not isinstance(params, dict):
        raise UserError(f"--params must be a JSON object, e.g. {example}; got {text!r}")
    if per_model:
        for model, values in params.items():
            if not isinstance(values, dict):
                raise UserError(
                    f"--params value of {model!r} must be a JSON object of its hyperparameters, "
                    f"e.g. {example}; got {json.dumps(values)}"
                )
    return params


def check_params(params: dict, models: list[str] | None = None) -> None:
    """Check a per-model ``--params`` before any data is read or anything is written.

    Every key must be a registered model (a typo is an error naming the known models), one of ``models``
    when they are given, and its values hyperparameters that model takes, of the right types.
    """
    from recsys.models.registry import create_model, list_models

    known = list_models()
    for name, values in params.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"--params names an unknown model {name!r}{hint}; known models: {', '.join(known)}"
            )
        if models is not None and name not in models:
            raise UserError(
                f"--params has values for {name}, which is not among the models to run "
                f"({', '.join(models)}); add it to --models or drop it from --params"
            )
        try:
            create_model(name, **values)
        except MissingExtra:  # not about the values: the model cannot run here
            raise
        except UserError as err:
            raise UserError(f"--params: {err}") from None


# ---------------------------------------------------------------------- the dataset
def add_workspace_argument(parser: argparse.ArgumentParser) -> None:
    """``--workspace``: the one folder a command writes under (see ``recsys.workspace``)."""
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="folder every output goes under (leaderboards/, models/, optuna.db, mlflow.db); "
        "default: $RECSYS_WORKSPACE, else ./runs",
    )


def add_models_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--models``: models or groups, comma-separated; ``default`` says what None means."""
    parser.add_argument(
        "--models",
        type=name_list,
        default=None,
        help=f"comma-separated models or groups (baselines, classical, deep, ablations, ensembles, choices, all); default: {default}",
    )


def add_tracking_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--tracking-uri`` and ``--no-tracking``: where ``what`` is logged in MLflow, or not at all."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite:///WORKSPACE/mlflow.db",
    )
    parser.add_argument("--no-tracking", action="store_true", help=f"do not log {what} to MLflow")


#: what ``--fit-on`` takes: the training split, or every rating of every split
FIT_ON = ("train", "all")


def add_fit_on_argument(parser: argparse.ArgumentParser) -> None:
    """``--fit-on``: fit on train (as the leaderboard does) or on every rating (every user known)."""
    parser.add_argument(
        "--fit-on",
        choices=FIT_ON,
        default="train",
        help="the ratings the model learns from: train, as the leaderboard fits (held-out users are then new "
        "users), or all: every rating of every split, so that every user and image of the data is known (for "
        "serving; nothing is evaluated, and models that stop early on val_seen train their full epochs)",
    )


def fit_data(dataset, fit_on: str):
    """The dataset a command's model fits on: ``dataset`` itself, or with ``fit_on="all"`` a copy whose every
    rating is in train (``Dataset.all_as_train``)."""
    return dataset.all_as_train() if fit_on == "all" else dataset


def prompt_features_arg(value: str) -> Path | bool:
    """--prompt-features: a file, or ``none`` (read no prompt embeddings, not even the file beside the features)."""
    return False if value == "none" else Path(value)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --image-features, --prompt-features, --encoder, --checkpoint, --holdout, --columns, --sep, --no-header,
    --score-range, --seed: the dataset."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="PAMELA directory or rating table (CSV/Parquet); default: the simulated PAMELA (cached)",
    )
    parser.add_argument("--image-features", type=Path, default=None, help=".npz with image_id and embedding")
    parser.add_argument(
        "--prompt-features",
        type=prompt_features_arg,
        default=None,
        help=".npz with image_id and embedding of each image's prompt, or none (default: X.text.npz beside "
        "--image-features X.npz, if it exists)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="embed images with this encoder (e.g. clip:ViT-B-32/laion2b_s34b_b79k) before fitting",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="local open_clip state dict for --encoder"
    )
    parser.add_argument(
        "--holdout",
        default=None,
        help="random:F, users:F or both:F (tables' default: both:0.2) for data without a split column",
    )
    add_table_arguments(parser)
    parser.add_argument(
        "--score-range", type=score_range, default=None, help="declared score range LOW,HIGH of a table"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of holdouts, reference draws and bootstrap")


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """--columns, --sep, --no-header: how a rating table is read (found from its first lines when not given)."""
    parser.add_argument(
        "--columns",
        default=None,
        help="a table's own column names, e.g. user=uid,item=movie,score=rating (also split=COLUMN)",
    )
    parser.add_argument(
        "--sep",
        default=None,
        help="a table's delimiter: , ; | :: or tab, whitespace (default None: found from the first lines)",
    )
    parser.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        default=None,
        help="the table has no header line: columns are user, item, score[, timestamp] by position (default: "
        "found from the first lines)",
    )


def dataset_from_args(args: argparse.Namespace, path=None, problems: list[str] | None = None):
    """The dataset named by ``add_data_arguments`` flags (or at ``path``), embedded through the cache when
    --encoder is given (the features file under the command's workspace); ``problems`` collects what is wrong
    instead of raising (``recsys data validate``)."""
    from recsys.data import load_dataset

    encoder = getattr(args, "encoder", None)
    if encoder and args.image_features:
        raise UserError("pass either --image-features or --encoder, not both")
    if encoder:
        require("deep", "--encoder (embedding the images)")
    ds = load_dataset(
        args.data if path is None else path,
        image_features=args.image_features,
        prompt_features=getattr(args, "prompt_features", None),
        holdout=args.holdout,
        seed=args.seed,
        score_range=args.score_range,
        columns=getattr(args, "columns", None),
        sep=getattr(args, "sep", None),
        header=getattr(args, "header", None),
        problems=problems,
    )
    if encoder:
        from features.embed import BadImagesError, embed_dataset_features

        try:  # the features file goes under the workspace, never into the data folder
            ds = embed_dataset_features(ds, encoder, checkpoint=args.checkpoint, workspace=args.workspace)
        except BadImagesError as err:
            raise err.remedy(
                "fix or remove them, or leave them out with `recsys features embed --skip-bad-images` and pass "
                "the file it writes with --image-features"
            ) from None
    return ds


def workspace_for_models(args: argparse.Namespace) -> Path:
    """The workspace of a command that saves fitted models, with ``WORKSPACE/models`` checked writable first: a
    read-only or full workspace fails in one line before any fitting, not after it."""
    from recsys.workspace import check_writable, resolve_workspace

    workspace = resolve_workspace(args.workspace)
    check_writable(workspace / "models")
    return workspace
