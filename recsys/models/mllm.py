"""Optional adapter: score a candidate with a multimodal LLM from a user's reference pairs.

The approach of Mo et al. (arXiv 2508.08220): the user's history becomes up to eight (disliked, liked) image
pairs with their prompts; the candidate follows; the score is the probability of a "+" against a "-" token
at the answer position, ``p(+) = sigmoid(logit(+) - logit(-))``.

Registered as ``mllm_scorer`` (group ``mllm``, not in the default set): it needs the ``mllm`` extra
(``transformers``), local weights (e.g. Idefics2-8B) and, in practice, a GPU. Without them, scoring raises ``MLLMUnavailable`` (a ``ColdStartNotSupported``), whose one-line
``skipped: ...`` reason the evaluator reports as an ``unsupported`` row.

The pure parts (pairing, prompt text, reading the +/- probability) are tested without any weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings, References, group_by
from recsys.errors import ColdStartNotSupported
from recsys.extras import missing_reason
from recsys.models.base import Model, _sigmoid
from recsys.models.params import DEVICES, Hyperparameters, at_least_one, hyper

IMAGE_TOKEN = "<image>"
INSTRUCTION = (
    "You predict whether one person will like an AI-generated image. In each example the person disliked the "
    "first image and liked the second."
)
QUESTION = "Will this person like the candidate image? Answer + or -."


class MLLMUnavailable(ColdStartNotSupported):
    """The MLLM scorer cannot run here (no transformers, no local weights); the message starts "skipped:"."""


def reference_pairs(image_idx: np.ndarray, score: np.ndarray, max_pairs: int = 8) -> list[tuple[int, int]]:
    """(disliked, liked) image pairs from one user's reference ratings, most contrasting first.

    Likes are ratings above the user's median, dislikes below it (ratings at the median are neither). The
    most disliked image is paired with the most liked, the next with the next, up to ``max_pairs``; ties
    are broken by image index so the pairing is deterministic. No likes or no dislikes: no pairs.
    """
    image_idx = np.asarray(image_idx, dtype=np.int64)
    score = np.asarray(score, dtype=float)
    if len(image_idx) != len(score):
        raise ValueError(f"{len(image_idx)} images but {len(score)} scores")
    if len(score) == 0:
        return []
    median = float(np.median(score))
    liked = [i for i in np.lexsort((image_idx, -score)) if score[i] > median]
    disliked = [i for i in np.lexsort((image_idx, score)) if score[i] < median]
    return [(int(image_idx[d]), int(image_idx[x])) for d, x in zip(disliked, liked, strict=False)][:max_pairs]


def build_prompt(
    pairs: Sequence[tuple[int, int]], candidate: int, prompts: Callable[[int], str]
) -> tuple[str, list[int]]:
    """The prompt text (one ``<image>`` placeholder per image) and the image indices in placeholder order.

    Order: for each pair, its disliked then its liked image; the candidate last.
    """
    lines = [INSTRUCTION]
    images: list[int] = []
    for number, (disliked, liked) in enumerate(pairs, start=1):
        lines.append(
            f'Example {number}: disliked {IMAGE_TOKEN} "{prompts(disliked)}"; liked {IMAGE_TOKEN} "{prompts(liked)}".'
        )
        images += [disliked, liked]
    lines.append(f'Candidate: {IMAGE_TOKEN} "{prompts(candidate)}"')
    lines.append(QUESTION)
    lines.append("Answer:")
    images.append(candidate)
    return "\n".join(lines), images


def plus_probability(logits: np.ndarray, plus_id: int, minus_id: int) -> float:
    """P("+") renormalised over {"+", "-"} from next-token logits (vocabulary,): sigmoid(l+ - l-)."""
    logits = np.asarray(logits, dtype=np.float64)
    diff = logits[plus_id] - logits[minus_id]
    return float(1.0 / (1.0 + np.exp(-diff))) if diff >= 0 else float(np.exp(diff) / (1.0 + np.exp(diff)))


def transformers_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


class MLLMScorer(Model):
    """A multimodal LLM reads liked/disliked reference pairs and scores a candidate by p("+") (needs the
    ``mllm`` extra, local weights and a GPU; otherwise reported as unsupported)."""

    state_schema: ClassVar[dict[str, Any]] = {
        "prompts_": ["list[str]", "None"],
        "image_paths_": ["list[str]", "None"],
        "ref_user_": "int[references] < users",
        "ref_image_": "int[references] < images",
        "ref_score_": "float[references]",
    }

    name = "mllm_scorer"

    class Params(Hyperparameters):
        model_id: str = hyper(
            "HuggingFaceM4/idefics2-8b", doc="a local image-text-to-text checkpoint (dir or id)"
        )
        max_pairs: int = at_least_one(8, "reference pairs in the prompt (the paper uses 8)")
        device: str = hyper("auto", choices=DEVICES, doc="auto (a GPU is required), cpu or cuda")
        score_low: float = hyper(1.0, doc="p(+) = 0 maps to this rating")
        score_high: float = hyper(5.0, doc="p(+) = 1 maps to this rating")

        def validate(self) -> None:
            if not self.score_low < self.score_high:
                raise ValueError(f"score_low ({self.score_low}) must be below score_high ({self.score_high})")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        #: (prompt text, image indices) -> p("+"); loaded from transformers on first use, or injected in tests
        self.backend: Callable[[str, list[int]], float] | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("mllm", cls.name)

    learns_from = (Ratings, Choices)  # zero-shot: choices become references as they are

    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        """Nothing is learned (zero-shot): keeps prompts and image paths, and the fit ratings (on choices: each
        choice as two pseudo-ratings, the chosen image 1, the other 0) as seen users' references."""
        ratings = data
        if isinstance(data, Choices):
            pairs = data
            refs = ChoiceReferences(-1, pairs.image_a, pairs.image_b, pairs.choice)
            images, scores = refs.as_ratings()
            users = np.concatenate([pairs.user_idx, pairs.user_idx])
            ratings = Ratings(users, images, self.score_low + scores * (self.score_high - self.score_low))
        images = dataset.images
        self.prompts_ = (
            [str(p).replace('"', "'") for p in images["prompt"]] if "prompt" in images.columns else None
        )
        self.image_paths_ = [str(p) for p in images["path"]] if "path" in images.columns else None
        self.ref_user_, self.ref_image_, self.ref_score_ = ratings.user_idx, ratings.image_idx, ratings.score

    # ------------------------------------------------------------------ scoring
    def _prompt_text(self, image: int) -> str:
        return self.prompts_[image] if self.prompts_ is not None else ""

    def _backend(self) -> Callable[[str, list[int]], float]:
        if self.backend is None:
            self.backend = _load_transformers_backend(self)
        return self.backend

    def score_user(self, refs: References, candidates: np.ndarray) -> np.ndarray:
        """Ratings (float64, n) of one user's candidate images from their references."""
        backend = self._backend()
        pairs = reference_pairs(refs.image_idx, refs.score, self.max_pairs)
        probs = np.array(
            [backend(*build_prompt(pairs, int(c), self._prompt_text)) for c in candidates], dtype=float
        )
        return self.score_low + probs * (self.score_high - self.score_low)

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self.score_user(refs, candidates) for refs, candidates in zip(references, images, strict=True)
        ]

    def _choice(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """P(a chosen over b) from the two images' P("+") (Bradley-Terry on their logits)."""
        p = [
            np.clip((x - self.score_low) / (self.score_high - self.score_low), 1e-6, 1 - 1e-6) for x in (a, b)
        ]
        return _sigmoid(np.log(p[0] / (1 - p[0])) - np.log(p[1] / (1 - p[1])))

    def predict_choices(self, user_idx: np.ndarray, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
        return self._choice(self.predict(user_idx, image_a), self.predict(user_idx, image_b))

    def predict_new_choices(self, references, image_a, image_b) -> list[np.ndarray]:
        self._check_fitted()
        span = self.score_high - self.score_low
        refs = []
        for r in references:
            images, scores = r.as_ratings()
            refs.append(References(r.user_idx, images, self.score_low + scores * span))
        scores = self._predict_new(
            refs, [np.concatenate([a, b]) for a, b in zip(image_a, image_b, strict=True)]
        )
        return [self._choice(s[: len(a)], s[len(a) :]) for s, a in zip(scores, image_a, strict=True)]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Seen users: their fit ratings are the references (raises ``MLLMUnavailable`` without a backend)."""
        out = np.empty(len(user_idx))
        for user, rows in group_by(user_idx):
            mine = self.ref_user_ == user
            refs = References(user, self.ref_image_[mine], self.ref_score_[mine])
            out[rows] = self.score_user(refs, image_idx[rows])
        return out


def _load_transformers_backend(model: MLLMScorer) -> Callable[[str, list[int]], float]:
    """A p("+") function from a local transformers checkpoint; ``MLLMUnavailable`` with the reason otherwise."""
    if not transformers_available():
        raise MLLMUnavailable(
            "skipped: mllm_scorer needs the transformers package (pip install transformers)"
        )
    try:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
    except ImportError as err:
        raise MLLMUnavailable(f"skipped: mllm_scorer cannot import its dependencies ({err})") from None
    device = (
        "cuda" if model.device == "cuda" or (model.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if device == "cpu" and model.device == "auto":
        raise MLLMUnavailable(
            "skipped: mllm_scorer found no GPU (pass device='cpu' to try on the CPU anyway)"
        )
    try:
        processor = AutoProcessor.from_pretrained(model.model_id, local_files_only=True)
        net = (
            AutoModelForImageTextToText.from_pretrained(model.model_id, local_files_only=True)
            .to(device)
            .eval()
        )
    except (OSError, ValueError) as err:
        raise MLLMUnavailable(
            f"skipped: no local weights for {model.model_id} ({str(err).splitlines()[0]})"
        ) from None
    tokenizer = processor.tokenizer
    plus_id = tokenizer.convert_tokens_to_ids("+")
    minus_id = tokenizer.convert_tokens_to_ids("-")
    from recsys.data.images import open_image

    paths = model.image_paths_
    if paths is None:
        raise MLLMUnavailable("skipped: the dataset has no image paths (images.path) to show the MLLM")

    def p_plus(text: str, images: list[int]) -> float:
        pictures: list[Any] = [open_image(paths[i]).convert("RGB") for i in images]
        inputs = processor(text=text, images=pictures, return_tensors="pt").to(device)
        with torch.no_grad():
            logits = net(**inputs).logits[0, -1].float().cpu().numpy()
        return plus_probability(logits, plus_id, minus_id)

    return p_plus
