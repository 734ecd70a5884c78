"""``recsys similar-users``, ``recsys similar-images`` and ``recsys serve``."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import numpy as np

from recsys.cli.common import (
    add_command,
    add_data_arguments,
    add_fit_on_argument,
    add_workspace_argument,
    check_params,
    dataset_from_args,
    fit_data,
    parse_params,
    positive_int,
    workspace_for_models,
)
from recsys.errors import UserError
from recsys.extras import require


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="a model with taste vectors (default None: user_ridge where the data has image features or "
        "metadata, else mf)",
    )
    parser.add_argument(
        "--params", default=None, help='JSON hyperparameters of the model, e.g. {"alpha": 10}'
    )
    add_fit_on_argument(parser)
    add_workspace_argument(parser)  # fitted models and indexes go to WORKSPACE/models/


def _add_listing_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--k and --json of the commands that print a ranked list of users or images."""
    parser.add_argument("--k", type=int, default=10, help=f"number of {what} to print")
    parser.add_argument("--json", action="store_true", help="print JSON, most similar first")


def _add_person_arguments(parser: argparse.ArgumentParser) -> None:
    """--user (a fitted user) or --references (a new user) of the commands about one person."""
    parser.add_argument("--user", default=None, help="external id of a fitted user")
    parser.add_argument(
        "--references",
        type=Path,
        default=None,
        help="a new user instead of --user: CSV of their ratings with columns item_id,score",
    )


def add_parsers(subparsers) -> None:
    """Add the ``similar-users``, ``similar-images`` and ``serve`` commands."""
    users = add_command(subparsers, "similar-users")
    add_data_arguments(users)
    _add_model_arguments(users)
    _add_person_arguments(users)
    _add_listing_arguments(users, "users")
    users.set_defaults(func=cmd_similar_users)

    images = add_command(subparsers, "similar-images")
    add_data_arguments(images)
    images.add_argument("--image", required=True, help="external image id")
    _add_listing_arguments(images, "images")
    add_workspace_argument(images)  # where --encoder writes the data's features
    images.set_defaults(func=cmd_similar_images)

    rank = add_command(subparsers, "rank")
    add_data_arguments(rank)
    _add_model_arguments(rank)
    _add_person_arguments(rank)
    rank.add_argument(
        "--images",
        type=Path,
        required=True,
        help="text file of candidate image ids of the data, one a line; or a folder of new image files, embedded "
        "with --encoder (the encoder of the data's features) and scored by the fitted model from their features, "
        "without a refit",
    )
    rank.add_argument(
        "--prompt",
        default=None,
        help="the prompt the new images (a folder) were generated from, embedded with --encoder's text tower; for "
        "models conditioned on the prompt (pal). Without it they are scored under the data's mean prompt",
    )
    rank.add_argument("--json", action="store_true", help="print JSON, best first")
    rank.set_defaults(func=cmd_rank)

    recommend = add_command(subparsers, "recommend")
    add_data_arguments(recommend)
    _add_model_arguments(recommend)
    _add_person_arguments(recommend)
    recommend.add_argument(
        "--n",
        type=positive_int,
        default=10,
        help="number of images to recommend (fewer if fewer are unrated)",
    )
    recommend.add_argument(
        "--include-rated",
        action="store_true",
        help="also recommend images the user rated in the fit data (a new user: the references)",
    )
    recommend.add_argument("--json", action="store_true", help="print JSON, best first")
    recommend.set_defaults(func=cmd_recommend)

    serve = add_command(subparsers, "serve")
    add_data_arguments(serve)
    _add_model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on, 1-65535")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 18,
        help="largest request body; a larger one is answered 413 before it is parsed",
    )
    serve.add_argument(
        "--max-references",
        type=int,
        default=1000,
        help="most reference ratings in one request (fold-in time grows with their cube); more is a 413",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=4,
        help="threads that run model calls side by side (1 runs them one at a time)",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds a request may wait for its model call (queueing included) before it is answered 504",
    )
    serve.add_argument(
        "--upload-workers",
        type=int,
        default=1,
        help="threads that embed images uploaded to POST /rank, apart from --workers (a busy pool answers 503)",
    )
    serve.add_argument(
        "--max-upload-pixels",
        type=int,
        default=1 << 25,
        help="most pixels (width x height, from the image headers) of one request's uploads; more is a 413",
    )
    serve.set_defaults(func=cmd_serve)


def _print_neighbours(neighbours: list[dict], as_json: bool, key: str) -> None:
    if as_json:
        print(json.dumps(neighbours, indent=2))
        return
    for rank, n in enumerate(neighbours, 1):
        extra = "  ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}"
            for k, v in n.items()
            if k not in (key, "score") and v not in (None, [])
        )
        print(f"{rank:>3}. {n[key]:<14} {n['score']:.3f}  {extra}")


def _check_model_params(model: str | None, params: dict) -> None:
    """``--params`` checked before the data is read; without ``--model`` the model depends on the data."""
    if model is None and params:
        raise UserError("--params needs --model NAME (without it the model depends on the data)")
    if model is not None:
        check_params({model: params})


def cmd_similar_users(args: argparse.Namespace) -> int:
    from recsys.retrieval.similar import load_or_fit

    if (args.user is None) == (args.references is None):
        raise UserError("similar-users: pass exactly one of --user ID or --references FILE.csv")
    require("faiss", "recsys similar-users")
    params = parse_params(args.params)
    _check_model_params(args.model, params)
    workspace = workspace_for_models(args)
    ds = fit_data(dataset_from_args(args), args.fit_on)
    if args.user is not None and ds.user_index(args.user) not in set(ds.train_users().tolist()):
        raise UserError(  # before a model is fitted for nothing
            f"user {args.user!r} has no training ratings; query by reference ratings instead, or fit on every "
            "rating (--fit-on all)"
        )
    _, similar = load_or_fit(
        args.model, ds, params=params, workspace=workspace, progress=not args.json, fit_on=args.fit_on
    )
    if args.references is not None:
        items, scores = _read_references(args.references)
        _print_neighbours(similar.by_references(items, scores, args.k), args.json, "user_id")
    else:
        _print_neighbours(similar.by_user(args.user, args.k), args.json, "user_id")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from recsys.data import References
    from recsys.ranking import candidate_files, check_encoder, new_images, rank_images
    from recsys.retrieval.similar import load_or_fit_model

    if (args.user is None) == (args.references is None):
        raise UserError("rank: pass exactly one of --user ID or --references FILE.csv")
    files = candidate_files(args.images) if args.images.is_dir() else None
    if files is not None:
        require("deep", "ranking image files (they are embedded first)")
    image_ids = [] if files is not None else _read_lines(args.images)
    if files is None and not image_ids:
        raise UserError(f"{args.images}: no candidate image ids (one a line)")
    if args.prompt is not None and (files is None or not args.prompt.strip()):
        raise UserError(
            "rank: --prompt gives the prompt of new images: a non-empty text, with --images FOLDER"
        )
    params = parse_params(args.params)
    _check_model_params(args.model, params)
    workspace = workspace_for_models(args)
    ds = fit_data(dataset_from_args(args), args.fit_on)
    new = None
    if files is not None:
        from features.embed import BadImagesError, embed_images

        encoder = check_encoder(ds, args.encoder)
        names = [p.name for p in files]
        try:
            embedded = embed_images(files, names, encoder, checkpoint=args.checkpoint, progress=not args.json)
        except BadImagesError as err:
            raise err.remedy(f"fix them or remove them from {args.images}") from None
        new = new_images(ds, names, embedded.embedding, prompts=_prompt_rows(ds, args, encoder, len(names)))
    references = None
    if args.references is not None:
        items, scores = _read_references(args.references)
        images = np.array([ds.image_index(i) for i in items], np.int64)
        references = References(-1, images, np.asarray(scores, np.float32))
    model, _, _ = load_or_fit_model(
        args.model, ds, params=params, workspace=workspace, progress=not args.json, fit_on=args.fit_on
    )
    ranking = rank_images(model, ds, image_ids, new=new, user_id=args.user, references=references)
    if args.json:
        print(json.dumps(ranking, indent=2, default=str))
    else:
        for row in ranking:
            print(f"{row['rank']:>4}. {row['image_id']!s:<20} {row['score']:.3f}")
    return 0


def _prompt_rows(ds, args: argparse.Namespace, encoder: str, n: int) -> np.ndarray | None:
    """``--prompt`` embedded by the encoder's text tower, one row per new image; None without it."""
    if args.prompt is None:
        return None
    if ds.prompt_features is None:
        raise UserError(
            f"rank: --prompt needs the data's prompts embedded alike, and {ds.name} has no prompt features "
            "(its images have no prompts)"
        )
    from features.embed import embed_texts

    row = embed_texts([args.prompt], ["--prompt"], encoder, checkpoint=args.checkpoint, progress=False)
    return np.repeat(row.embedding, n, axis=0)


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys.data import References
    from recsys.recommend import recommend
    from recsys.retrieval.similar import load_or_fit_model

    if (args.user is None) == (args.references is None):
        raise UserError("recommend: pass exactly one of --user ID or --references FILE.csv")
    params = parse_params(args.params)
    _check_model_params(args.model, params)
    workspace = workspace_for_models(args)
    ds = fit_data(dataset_from_args(args), args.fit_on)
    references = None
    if args.references is not None:
        items, scores = _read_references(args.references)
        images = np.array([ds.image_index(i) for i in items], np.int64)
        references = References(-1, images, np.asarray(scores, np.float32))
    if args.user is not None:
        ds.user_index(args.user)  # an unknown id fails before any fit
    model = load_or_fit_model(
        args.model, ds, params=params, workspace=workspace, progress=not args.json, fit_on=args.fit_on
    )[0]
    rows = recommend(
        model, ds, user_id=args.user, references=references, n=args.n, include_rated=args.include_rated
    )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for row in rows:
            mark = "  (rated)" if row["rated"] else ""
            print(f"{row['rank']:>4}. {row['image_id']!s:<20} {row['score']:.3f}{mark}")
    return 0


def _read_lines(path: Path) -> list[str]:
    """The non-empty lines of a text file, stripped."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def _read_references(path: Path) -> tuple[list, list[float]]:
    """(item ids, scores) of a new user's reference ratings in a CSV with columns item_id,score."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as a CSV ({type(err).__name__}: {err})") from None
    missing = [c for c in ("item_id", "score") if c not in table.columns]
    if missing:
        raise UserError(f"{path}: lacks column(s) {', '.join(missing)}; references need item_id,score")
    scores = pd.to_numeric(table["score"], errors="coerce")
    if scores.isna().any():
        raise UserError(f"{path}: non-numeric score at row {int(scores.isna().to_numpy().argmax())}")
    return table["item_id"].tolist(), scores.tolist()


def cmd_similar_images(args: argparse.Namespace) -> int:
    from recsys.retrieval.similar import SimilarImages

    require("faiss", "recsys similar-images")
    ds = dataset_from_args(args)
    _print_neighbours(SimilarImages(ds).by_image(args.image, args.k), args.json, "image_id")
    return 0


def _listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), as uvicorn binds one; a one-line UserError when that fails."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError, UnicodeError) as err:
        sock.close()
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"cannot listen on {host}:{port} ({reason}); pick another --host or --port") from None
    sock.set_inheritable(True)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    require("serve", "recsys serve")
    import uvicorn

    from recsys.retrieval.service import ServiceLimits, create_app
    from recsys.retrieval.similar import load_or_fit

    params = parse_params(args.params)
    _check_model_params(args.model, params)
    limits = ServiceLimits(
        max_body_bytes=args.max_body_bytes,
        max_references=args.max_references,
        workers=args.workers,
        timeout_s=args.timeout,
        upload_workers=args.upload_workers,
        max_upload_pixels=args.max_upload_pixels,
    )
    workspace = workspace_for_models(args)
    sock = _listen_socket(args.host, args.port)  # before loading: a busy port fails fast
    try:
        ds = fit_data(dataset_from_args(args), args.fit_on)
        model, similar = load_or_fit(args.model, ds, params=params, workspace=workspace, fit_on=args.fit_on)
        app = create_app(model, ds, similar, limits, encoder=args.encoder, checkpoint=args.checkpoint)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info")
        # Ctrl-C: uvicorn shuts down gracefully, then raises the signal again; the KeyboardInterrupt it becomes
        # ends the command like any other interrupted one ("interrupted", exit 130)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
