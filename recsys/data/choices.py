"""Pairwise choices: a person was shown two images and chose one of them, or called it a tie.

``Choices`` is to choice data what ``Ratings`` is to rating data: the aligned arrays of one split, in the
dataset's contiguous indices. ``choice`` is the outcome seen from image a: 1.0 when a was chosen, 0.0 when b
was chosen, 0.5 for a tie (Pick-a-Pic's ``label_0``). A model of choices predicts P(a chosen over b) for a
pair; a tie counts half for each side. Loaders that produce pairs live in ``recsys.data.pickapic``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: the value of ``Choices.choice`` for each outcome
CHOSE_A, CHOSE_B, TIE = 1.0, 0.0, 0.5


@dataclass(frozen=True)
class Choices:
    """Aligned arrays of one split: ``user_idx[i]`` compared ``image_a[i]`` with ``image_b[i]`` and chose
    ``choice[i]`` (1.0: a, 0.0: b, 0.5: a tie). ``session[i]`` (optional) names the choices that stay together
    in every split and every reference draw (``choice_sessions``); None: each comparison on its own."""

    user_idx: np.ndarray  # int64, (n,)
    image_a: np.ndarray  # int64, (n,)
    image_b: np.ndarray  # int64, (n,)
    choice: np.ndarray  # float32, (n,)
    session: np.ndarray | None = None  # int64, (n,)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if len(self.image_a) != n or len(self.image_b) != n or len(self.choice) != n:
            raise ValueError("Choices arrays must have the same length")
        if self.session is not None and len(self.session) != n:
            raise ValueError("Choices arrays must have the same length")

    def __len__(self) -> int:
        return len(self.user_idx)

    def by_user(self) -> list[tuple[int, np.ndarray]]:
        """(user_idx, positions of that user's pairs) per user, users ascending, positions in order."""
        order = np.argsort(self.user_idx, kind="stable")
        users, starts = np.unique(self.user_idx[order], return_index=True)
        return list(zip(users.tolist(), np.split(order, starts[1:]), strict=True))

    def subset(self, mask: np.ndarray) -> Choices:
        """The pairs selected by a boolean mask or an index array."""
        session = None if self.session is None else self.session[mask]
        return Choices(
            self.user_idx[mask], self.image_a[mask], self.image_b[mask], self.choice[mask], session
        )

    def images(self) -> np.ndarray:
        """Sorted indices of the images shown on either side."""
        return np.unique(np.concatenate([self.image_a, self.image_b]))

    def keys(self) -> np.ndarray:
        """One row per pair, (n, 3) int64: user, lower image index, higher image index. Two rows are the same
        comparison when their keys are equal, whichever side each image was shown on."""
        low = np.minimum(self.image_a, self.image_b)
        high = np.maximum(self.image_a, self.image_b)
        return np.stack([self.user_idx, low, high], axis=1).astype(np.int64)

    def comparison_codes(self, n_images: int) -> np.ndarray:
        """One int64 per pair, ordered like its ``keys()`` row: equal codes are the same comparison. A single
        integer (user, low, high) in base ``n_images`` when it fits, which sorts much faster than key rows."""
        low = np.minimum(self.image_a, self.image_b).astype(np.int64)
        high = np.maximum(self.image_a, self.image_b).astype(np.int64)
        users = int(self.user_idx.max(initial=0)) + 1
        if users * n_images * n_images < 2**62:
            return (self.user_idx.astype(np.int64) * n_images + low) * n_images + high
        return np.unique(self.keys(), axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    @staticmethod
    def concat(parts: list[Choices]) -> Choices:
        """All pairs of ``parts``, in order (with sessions when every part has them)."""
        if not parts:
            empty = np.empty(0, np.int64)
            return Choices(empty, empty, empty, np.empty(0, np.float32))
        sessions = [p.session for p in parts]
        return Choices(
            np.concatenate([p.user_idx for p in parts]),
            np.concatenate([p.image_a for p in parts]),
            np.concatenate([p.image_b for p in parts]),
            np.concatenate([p.choice for p in parts]),
            None if any(s is None for s in sessions) else np.concatenate(sessions),
        )


def choice_sessions(pairs: Choices, n_images: int, prompts: np.ndarray | None = None) -> np.ndarray:
    """A session id per pair (int64): the choices that must stay together.

    Without ``prompts``: one user's repeats of one comparison (the same unordered pair of images), numbered in
    ascending order of (user, lower image, higher image). With ``prompts`` (a label per pair, Pick-a-Pic's
    caption; None or NaN: no label): one user's choices connected by a shared prompt or a shared image, so that
    the images of one prompt session (where the chosen image stays for the next comparison) never fall on both
    sides of a split or of a reference draw; numbered in order of their first pair.
    """
    n = len(pairs)
    if prompts is None or not n:
        return (
            np.unique(pairs.comparison_codes(n_images), return_inverse=True)[1].reshape(-1).astype(np.int64)
        )
    user = pairs.user_idx.astype(np.int64)
    tokens = [user * n_images + pairs.image_a, user * n_images + pairs.image_b]
    labelled = pd.notna(prompts)
    prompt = pd.DataFrame({"user": user[labelled], "prompt": np.asarray(prompts, dtype=object)[labelled]})
    prompt_token = prompt.groupby(["user", "prompt"], sort=False).ngroup().to_numpy(np.int64)
    ids, compact = np.unique(np.concatenate(tokens), return_inverse=True)
    a, b = compact[:n], compact[n:]
    p = len(ids) + prompt_token
    rows = np.concatenate([a, a[labelled]])
    cols = np.concatenate([b, p])
    size = len(ids) + (int(prompt_token.max()) + 1 if len(prompt_token) else 0)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    return pd.factorize(component[a])[0].astype(np.int64)


@dataclass(frozen=True)
class ChoiceReferences:
    """A new user's reference choices: what a model may learn from before predicting the user's other choices
    (``choice`` as in ``Choices``: 1.0 a chosen, 0.0 b chosen, 0.5 a tie)."""

    user_idx: int  # the user's index in the dataset (demographics live there), or -1 for someone not in it
    image_a: np.ndarray  # int64, (k,)
    image_b: np.ndarray  # int64, (k,)
    choice: np.ndarray  # float32, (k,)

    def __len__(self) -> int:
        return len(self.image_a)

    def as_ratings(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, pseudo-scores on 0..1) of the references: each choice as two ratings, the chosen image 1 and
        the other 0 (a tie: both 0.5)."""
        images = np.concatenate([self.image_a, self.image_b]).astype(np.int64)
        choice = np.asarray(self.choice, np.float32)
        return images, np.concatenate([choice, 1.0 - choice]).astype(np.float32)
