"""Every command of ``recsys``: its one-line help, an optional description and its examples, in one table.

The command modules build their parsers from it (``add_command(subparsers, name)``), so the whole surface of
the CLI reads here in one place.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    help: str
    example: str
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "data": Command(
        help="simulate, validate or split datasets",
        example="recsys data simulate --out data/sim\nrecsys data validate data/sim\n"
        "recsys data split --data ratings.csv --out split.csv",
    ),
    "simulate": Command(
        help="write simulated PAMELA-format data with a known ground truth",
        example="recsys data simulate --out data/sim --users 50 --images 500 --no-images\n"
        "recsys data simulate --out data/pickapic --pickapic",
    ),
    "validate": Command(
        help="check a dataset and print a summary or its problems",
        example="recsys data validate /data/PAMELA --json",
    ),
    "split": Command(
        help="write a dataset's ratings with their split (user_id, item_id, score, split) for other tools",
        description="Write every rating (or choice) of a dataset with the split it is in: the seeded holdout "
        "of a table without a split column (--holdout, --seed), or the data's own splits. Read back (by recsys "
        "or any other tool) it gives the same split.",
        example="recsys data split --data ratings.csv --out ratings_split.csv\n"
        "recsys data split --data u.data --holdout random:0.1 --seed 1 --out split.parquet",
    ),
    "tune": Command(
        help="search one model's hyperparameters (Optuna TPE; resumable)",
        example="recsys tune ridge --data data/sim --trials 50",
    ),
    "study": Command(
        help="tune several models with the same trial budget each",
        example="recsys study --data data/sim --models ridge,mf,user_knn --trials 20",
    ),
    "features": Command(
        help="embed images and prompts with an image-text encoder",
        example="recsys features encoders\n"
        "recsys features embed --data /data/PAMELA --encoder clip:ViT-B-32/laion2b_s34b_b79k --text",
    ),
    "embed": Command(
        help="write image (and prompt) embeddings of a dataset to an .npz features file",
        description="Embed every image of a dataset; results are cached per chunk, so a second run is "
        "served from the cache and an interrupted run resumes. Under torchrun each process embeds its share of "
        "the chunks (chunk c: process c mod N) into the cache, and process 0 writes the file from it.",
        example="recsys features embed --data /data/PAMELA --encoder clip:ViT-B-32/laion2b_s34b_b79k --text\n"
        "recsys features embed --data DIR --encoder clip:ViT-L-14/openai --checkpoint vit_l14.pt\n"
        "torchrun --nproc_per_node 4 -m recsys.cli features embed --data DIR --encoder clip:ViT-L-14/openai",
    ),
    "encoders": Command(
        help="list the encoder names open_clip can fetch weights for",
        example="recsys features encoders --random",
    ),
    "leaderboard": Command(
        help="fit models and evaluate them under one protocol",
        example="recsys leaderboard --data data/sim --models baselines,classical --shots 0,10\n"
        "recsys leaderboard --tuned --models ridge,mf\n"
        "recsys leaderboard --models mf,profile --splits test_unseen --references uncertainty --reference-pool 40\n"
        "recsys leaderboard --data ratings.csv --holdout random:0.2 --task topn --topn-k 10,20",
    ),
    "models": Command(help="list registered models", example="recsys models"),
    "train": Command(
        help="fit one model on the training split and save it (data parallel under torchrun)",
        description="Fit one model on the data's training split and save it, by default where similar-users, "
        "rank and serve reload it. Under torchrun the torch models (two_tower, pref_tokens, pal, pal_a) train data "
        "parallel with DistributedDataParallel, each process on its share of every epoch's batches, and process "
        "0 saves.",
        example="recsys train --model two_tower --data data/sim --out models/two_tower\n"
        "torchrun --nproc_per_node 2 -m recsys.cli train --model two_tower --data data/sim --out models/tt",
    ),
    "explain": Command(
        help="a user's preference profile and why it scores an image",
        description="Fit the profile model, then print a user's profile and the top contributions to one "
        "image's score.",
        example="recsys explain --user p_00856a24 --image 1494357 --top 5",
    ),
    "similar-users": Command(
        help="the users with the most similar taste to a user",
        example="recsys similar-users --user p_00856a24 --k 5 --json",
    ),
    "similar-images": Command(
        help="the images most similar to an image (by features)",
        example="recsys similar-images --image 1494357 --k 5",
    ),
    "rank": Command(
        help="a person's candidate images in order, best first, with predicted scores",
        example="recsys rank --user p_00856a24 --images candidates.txt\n"
        "recsys rank --model mf --references refs.csv --images candidates.txt --json\n"
        "recsys rank --encoder clip:ViT-B-32/laion2b_s34b_b79k --references refs.csv --images new_images/",
    ),
    "recommend": Command(
        help="the n images a model scores highest for a person, among those they have not rated",
        description="Score every image of the data for a fitted user (--user) or a new user (--references) "
        "and print the n best, leaving out the images the user rated in the fit data unless --include-rated.",
        example="recsys recommend --user p_00856a24 --n 10\n"
        "recsys recommend --data ratings.csv --model mf --user 196 --n 20 --json\n"
        "recsys recommend --model mf --references refs.csv --include-rated",
    ),
    "atlas": Command(
        help="an HTML report of a model's taste groups: members, demographics, likes, a map",
        description="Group the fitted users by taste (two_tower: by main prototype; other models: k-means of "
        "their user vectors) and write one self-contained HTML file with each group's members, demographic "
        "make-up, the images it likes more and less than the consensus, and a 2-D map of the users.",
        example="recsys atlas --model two_tower\nrecsys atlas --model mf --groups 8 --out atlas.html",
    ),
    "serve": Command(
        help="HTTP service: similar users and scores (FastAPI)",
        example="recsys serve --model user_ridge --port 8000\n"
        "recsys serve --max-references 500 --workers 8 --timeout 5",
        description="Serve one fitted model over HTTP: similar users, recommendations, scores and rankings of "
        "a fitted or a new user (JSON). http://HOST:PORT/docs describes every endpoint and sends requests from "
        "the page; it needs no internet.",
    ),
}
