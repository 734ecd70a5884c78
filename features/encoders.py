"""Image-text encoders by name: ``clip:ARCH/TAG`` as open_clip names architectures and pretrained tags.

Examples: ``clip:ViT-B-32/laion2b_s34b_b79k``, ``clip:ViT-L-14/openai``; with a checkpoint, ``clip:ViT-B-32``.
Weights come three ways:

- a pretrained tag (``laion2b_s34b_b79k``): open_clip fetches them into its hub cache, the ordinary way;
- ``checkpoint=PATH``: a state dict saved from an open_clip model (``torch.save(model.state_dict(), PATH)``,
  an open_clip training checkpoint with a ``state_dict`` entry, or a ``.safetensors`` file); the model is
  built with ``pretrained=None`` and the file loaded with ``load_state_dict``. The tag then only picks the
  preprocessing (mean, std, resize mode) that the tag would use, may be any label, and may be left out
  (``clip:ARCH``: open_clip's default preprocessing);
- the tag ``random`` (alias ``none``): a seeded random initialisation, for tests and benchmarks.

Everything in the suite that touches open_clip lives in this package.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from features.cache import sha256_file
from recsys.errors import UserError

#: encoder families by name prefix (one explicit registry; only open_clip for now)
ENCODER_FAMILIES = ("clip",)

#: tags that mean "no pretrained weights": a random initialisation seeded with RANDOM_INIT_SEED
RANDOM_TAGS = ("random", "none")
RANDOM_INIT_SEED = 0

#: a CLIP small enough to build and run in milliseconds on a CPU (32 px images, 32-d embeddings); for tests,
#: smoke runs and benchmarks of the pipeline itself. Register it with ``register_architecture``.
TINY_ARCHITECTURE: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: bump when the way embeddings are computed changes, so old cache entries are not served
CACHE_FORMAT = 1

_NAME_PATTERN = re.compile(r"^(?P<family>[a-z]+):(?P<arch>[^/\s:]+)(?:/(?P<tag>[^/\s]+))?$")
_config_dir_lock = threading.Lock()
_config_dir: Path | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder name: family (``clip``), open_clip architecture and pretrained tag."""

    family: str
    architecture: str
    tag: str

    @property
    def name(self) -> str:
        base = f"{self.family}:{self.architecture}"
        return f"{base}/{self.tag}" if self.tag else base

    @property
    def random_init(self) -> bool:
        return self.tag.lower() in RANDOM_TAGS


def _open_clip():
    # imported lazily: open_clip takes seconds to import and most commands never need it
    import open_clip

    return open_clip


def parse_encoder_name(name: str, *, checkpoint: bool = False) -> EncoderSpec:
    """Split ``clip:ARCH/TAG`` into its parts; a UserError for a malformed name or an unknown architecture.

    With ``checkpoint`` (the weights come from a local file) the tag may be left out: ``clip:ARCH``.
    """
    match = _NAME_PATTERN.match(name.strip()) if isinstance(name, str) else None
    if match is None or (match["tag"] is None and not checkpoint):
        raise UserError(
            f"encoder name {name!r} is malformed; expected FAMILY:ARCH/TAG, e.g. clip:ViT-B-32/laion2b_s34b_b79k "
            "(TAG 'random' for an untrained model; FAMILY:ARCH alone with --checkpoint); "
            "`recsys features encoders` lists them"
        )
    family, arch, tag = match["family"], match["arch"], match["tag"] or ""
    if family not in ENCODER_FAMILIES:
        raise UserError(f"encoder {name!r}: unknown family {family!r}; known: {', '.join(ENCODER_FAMILIES)}")
    known = _open_clip().list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `recsys features encoders` lists them"
        raise UserError(f"encoder {name!r}: open_clip has no architecture {arch!r}{hint}")
    return EncoderSpec(family, arch, tag)


def list_encoders(*, include_random: bool = False) -> list[str]:
    """Every ``clip:ARCH/TAG`` open_clip can fetch weights for (and ``clip:ARCH/random`` when asked)."""
    open_clip = _open_clip()
    names = [f"clip:{arch}/{tag}" for arch, tag in open_clip.list_pretrained()]
    if include_random:
        names += [f"clip:{arch}/random" for arch in open_clip.list_models()]
    return names


def register_architecture(name: str, config: dict[str, Any]) -> str:
    """Make a custom open_clip architecture (``embed_dim``, ``vision_cfg``, ``text_cfg``) known by ``name``.

    Returns ``name``; afterwards ``clip:NAME/random`` or ``clip:NAME/TAG`` with a checkpoint can be loaded.
    """
    global _config_dir
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ValueError(f"architecture name {name!r} may hold only letters, digits and _ . + -")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(f"architecture config lacks {', '.join(missing)}")
    with _config_dir_lock:
        if _config_dir is None:
            # open_clip registers configs from JSON files only; one private directory per process
            _config_dir = Path(tempfile.mkdtemp(prefix="recsys-open-clip-configs-"))
        path = _config_dir / f"{name}.json"
        path.write_text(json.dumps(config))
        _open_clip().add_model_config(path)
    return name


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when there is one, else CPU; a UserError for an unknown or unavailable device."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise UserError(f"unknown device {text!r}; use auto, cpu or cuda (cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {text!r} requested but torch sees no CUDA GPU; use --device cpu or auto")
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"device {text!r} is not supported; use auto, cpu or cuda (cuda:N)")
    return resolved


class ClipEncoder:
    """An open_clip model with its image preprocessing and tokenizer, ready to embed batches.

    The model is built on first use of ``model``, ``preprocess`` or ``tokenizer`` (or by ``build()``), so a run
    served entirely from the cache never pays for building it or reading its weights.

    Attributes:
        spec: the parsed name. ``name`` is ``spec.name``.
        checkpoint: the local weights file, or None.
        device: where the model runs.
        model: the open_clip model (eval mode).
        preprocess: PIL image -> float32 tensor (3, H, W), open_clip's inference transform.
        tokenizer: list of str -> int64 tensor (n, context_length).
        embed_dim: length d of an embedding.
        cache_key: hex digest of everything that determines the embeddings (name, architecture config,
            preprocessing choice, checkpoint content), used to key cached results.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        device: torch.device,
        *,
        pretrained: str | None,
        build_kwargs: dict[str, Any],
        checkpoint: Path | None,
        checkpoint_sha256: str | None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.checkpoint = checkpoint
        self._pretrained = pretrained
        self._build_kwargs = build_kwargs
        self._parts: tuple | None = None
        self._lock = threading.Lock()
        open_clip = _open_clip()
        config = open_clip.get_model_config(spec.architecture)
        self.embed_dim = int(config["embed_dim"])
        tag_cfg = open_clip.get_pretrained_cfg(spec.architecture, spec.tag)
        identity = {
            "format": CACHE_FORMAT,
            "name": spec.name if not spec.random_init else f"{spec.name}#seed{RANDOM_INIT_SEED}",
            "architecture": config,
            # the tag's preprocessing (mean, std, resize mode) and the overrides the build uses
            "pretrained_cfg": {k: v for k, v in tag_cfg.items() if k not in ("url", "hf_hub")},
            "build": build_kwargs,
            "checkpoint_sha256": checkpoint_sha256,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        self.cache_key = digest.hexdigest()

    @property
    def is_built(self) -> bool:
        return self._parts is not None

    def build(self) -> ClipEncoder:
        """Build the model now (fetching or reading weights); returns self. Raises UserError on bad weights."""
        with self._lock:
            if self._parts is None:
                self._parts = _build_parts(self)
        return self

    @property
    def model(self):
        return self.build()._parts[0]

    @property
    def preprocess(self):
        return self.build()._parts[1]

    @property
    def tokenizer(self):
        return self.build()._parts[2]

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        source = f", checkpoint={str(self.checkpoint)!r}" if self.checkpoint else ""
        return f"ClipEncoder({self.name!r}{source}, device={str(self.device)!r}, dim={self.embed_dim})"

    def _autocast(self):
        # mixed precision only on a GPU: on CPU fp32 is as fast and keeps results exact
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def encode_image_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """Preprocessed images (float32, n x 3 x H x W) -> L2-normalised embeddings (float32, n x d)."""
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        with self._autocast():
            out = self.model.encode_image(pixels.to(self.device))
        return F.normalize(out.float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_text_batch(self, texts: list[str]) -> np.ndarray:
        """Texts -> L2-normalised embeddings (float32, n x d); the tokenizer truncates long texts."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._autocast():
            out = self.model.encode_text(tokens)
        return F.normalize(out.float(), dim=-1).cpu().numpy()


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Hide open_clip's "initialized randomly" warning: here that is asked for, or weights follow from a file."""
    drop = _DropMessage("No pretrained weights loaded")
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            # weights_only: a checkpoint is data, never code to run
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), "")[:200]
        raise UserError(
            f"{path}: cannot read checkpoint ({type(err).__name__}: {reason}); "
            "save it with torch.save(model.state_dict(), PATH)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # an open_clip training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    # checkpoints written under DistributedDataParallel prefix every key with 'module.'
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _build_parts(encoder: ClipEncoder) -> tuple:
    """(model, preprocess, tokenizer) of an encoder: open_clip builds it, then the checkpoint is loaded (read
    first: an unreadable file fails before a large model is built for it)."""
    open_clip = _open_clip()
    state = _read_state_dict(encoder.checkpoint) if encoder.checkpoint is not None else None
    # seeded so that a random initialisation is the same model every time (and can be cached by name)
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                encoder.spec.architecture,
                pretrained=encoder._pretrained,
                device="cpu",
                **encoder._build_kwargs,
            )
        except (RuntimeError, OSError) as err:
            if encoder._pretrained is None:
                raise
            raise UserError(
                f"encoder {encoder.name!r}: could not fetch the pretrained weights ({err}); "
                "check the network or pass --checkpoint with a local state dict"
            ) from None

    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first_line = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise UserError(
                f"{encoder.checkpoint}: does not fit architecture {encoder.spec.architecture} "
                f"({first_line[:300]}); pass the encoder name the checkpoint was trained with"
            ) from None

    model = model.to(encoder.device).eval()
    return model, preprocess, open_clip.get_tokenizer(encoder.spec.architecture)


def load_encoder(
    name: str, *, checkpoint: str | Path | None = None, device: str = "auto", lazy: bool = False
) -> ClipEncoder:
    """The encoder ``name`` (``clip:ARCH/TAG``) on ``device``.

    Args:
        name: ``clip:ARCH/TAG``; TAG ``random`` gives a seeded random initialisation; with ``checkpoint`` the
            tag only picks the preprocessing and may be left out (``clip:ARCH``).
        checkpoint: local state dict to load instead of fetching the tag's weights.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        lazy: build the model on first use instead of now (name, tag, device and checkpoint file are still
            checked now; an unreadable or mismatched checkpoint or unreachable weights fail on first use).

    Raises:
        UserError: malformed name, unknown architecture or tag, unreadable or mismatched checkpoint,
            weights that cannot be fetched.
    """
    spec = parse_encoder_name(name, checkpoint=checkpoint is not None)
    open_clip = _open_clip()
    target = resolve_device(device)
    known_tags = open_clip.list_pretrained_tags_by_model(spec.architecture)
    build_kwargs: dict[str, Any] = {}
    checkpoint_path = Path(checkpoint).expanduser() if checkpoint is not None else None
    checkpoint_sha256 = None

    if checkpoint_path is not None:
        if not checkpoint_path.is_file():
            raise UserError(f"{checkpoint_path}: no such checkpoint file")
        checkpoint_sha256 = sha256_file(checkpoint_path)
        if spec.tag in known_tags:
            # the weights come from the file, but preprocessing (and quick_gelu) should match the tag's
            cfg = open_clip.get_pretrained_cfg(spec.architecture, spec.tag)
            build_kwargs.update(image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                                image_interpolation=cfg.get("interpolation"),
                                image_resize_mode=cfg.get("resize_mode"),
                                force_quick_gelu=bool(cfg.get("quick_gelu", False)))  # fmt: skip
        pretrained = None
    elif spec.random_init:
        pretrained = None
    else:
        if spec.tag not in known_tags:
            tags = ", ".join(known_tags) if known_tags else "none (use TAG random, or --checkpoint)"
            raise UserError(f"encoder {spec.name!r}: open_clip has no pretrained tag {spec.tag!r} for "
                            f"{spec.architecture}; known tags: {tags}")  # fmt: skip
        pretrained = spec.tag

    encoder = ClipEncoder(spec, target, pretrained=pretrained, build_kwargs=build_kwargs,
                          checkpoint=checkpoint_path, checkpoint_sha256=checkpoint_sha256)  # fmt: skip
    return encoder if lazy else encoder.build()
