"""Encoder names, seeded random init, and loading weights from a local checkpoint (never from the network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from features.encoders import (
    TINY_ARCHITECTURE,
    ClipEncoder,
    list_encoders,
    load_encoder,
    parse_encoder_name,
    register_architecture,
    resolve_device,
)
from recsys.errors import UserError

TINY = "clip:recsys-test-tiny/random"


@pytest.fixture(scope="module", autouse=True)
def tiny_architecture():
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    # a second architecture whose weights have other shapes, to test mismatched checkpoints
    wider = {**TINY_ARCHITECTURE, "embed_dim": 48}
    register_architecture("recsys-test-tiny-wide", wider)


def _perturbed_state(encoder, seed: int = 1) -> dict[str, torch.Tensor]:
    """The encoder's weights plus seeded noise: a model no random init reproduces."""
    generator = torch.Generator().manual_seed(seed)
    return {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone()
        for k, v in encoder.model.state_dict().items()
    }


def _direct_image_embedding(model, pixels: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model.encode_image(pixels).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_parse_valid_name():
    spec = parse_encoder_name("clip:ViT-B-32/laion2b_s34b_b79k")
    assert (spec.family, spec.architecture, spec.tag) == ("clip", "ViT-B-32", "laion2b_s34b_b79k")
    assert spec.name == "clip:ViT-B-32/laion2b_s34b_b79k"
    assert not spec.random_init
    assert parse_encoder_name("clip:ViT-L-14/random").random_init


@pytest.mark.parametrize(
    "name", ["ViT-B-32", "clip:ViT-B-32", "clip:/openai", "clip:ViT-B-32/a/b", "clip:ViT-B-32/", ""]
)
def test_malformed_name_is_user_error(name):
    with pytest.raises(UserError, match="malformed"):
        parse_encoder_name(name)


def test_unknown_family_and_architecture_are_user_errors():
    with pytest.raises(UserError, match="unknown family"):
        parse_encoder_name("siglip:ViT-B-32/openai")
    with pytest.raises(UserError, match="no architecture 'ViT-B-33'.*ViT-B-32"):
        parse_encoder_name("clip:ViT-B-33/openai")


def test_list_encoders_names_open_clip_pairs():
    names = list_encoders()
    assert "clip:ViT-B-32/laion2b_s34b_b79k" in names and "clip:ViT-L-14/openai" in names
    assert all(parse_encoder_name(n).tag for n in names[:5])
    assert "clip:ViT-B-32/random" in list_encoders(include_random=True)


def test_unknown_tag_fails_before_any_download():
    with pytest.raises(UserError, match="no pretrained tag 'nope'.*laion2b_s34b_b79k"):
        load_encoder("clip:ViT-B-32/nope", device="cpu")


def test_random_init_is_seeded_and_identified():
    first, second = load_encoder(TINY, device="cpu"), load_encoder(TINY, device="cpu")
    for key, value in first.model.state_dict().items():
        torch.testing.assert_close(value, second.model.state_dict()[key], rtol=0, atol=0)
    assert first.cache_key == second.cache_key
    assert first.embed_dim == 32 and first.device.type == "cpu"


def _save_perturbed(path) -> ClipEncoder:
    """A tiny encoder with perturbed weights, its state saved as a checkpoint at ``path``."""
    source = load_encoder(TINY, device="cpu")
    source.model.load_state_dict(_perturbed_state(source))
    torch.save(source.model.state_dict(), path)
    return source


def _assert_same_image_embeddings(
    loaded: ClipEncoder, source: ClipEncoder, n: int
) -> tuple[torch.Tensor, np.ndarray]:
    """``loaded`` embeds ``n`` random images as ``source``'s model does; returns the pixels and embeddings."""
    pixels = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = _direct_image_embedding(source.model, pixels)
    np.testing.assert_allclose(loaded.encode_image_batch(pixels), expected, rtol=0, atol=1e-6)
    return pixels, expected


def test_checkpoint_gives_the_embeddings_of_the_saved_model(tmp_path):
    path = tmp_path / "finetuned.pt"
    source = _save_perturbed(path)

    loaded = load_encoder("clip:recsys-test-tiny/finetuned", checkpoint=path, device="cpu")
    pixels, expected = _assert_same_image_embeddings(loaded, source, 5)
    texts = ["a red square", "a blue circle"]
    with torch.no_grad():
        direct_text = source.model.encode_text(source.tokenizer(texts)).numpy()
    direct_text /= np.linalg.norm(direct_text, axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.encode_text_batch(texts), direct_text, rtol=0, atol=1e-6)

    random_init = load_encoder(TINY, device="cpu")
    assert not np.allclose(random_init.encode_image_batch(pixels), expected, atol=1e-3)
    # the checkpoint's content, not its name, identifies the weights
    assert loaded.cache_key != random_init.cache_key
    torch.save(_perturbed_state(source, seed=2), path)
    assert (
        load_encoder("clip:recsys-test-tiny/finetuned", checkpoint=path, device="cpu").cache_key
        != loaded.cache_key
    )


def test_with_a_checkpoint_the_tag_may_be_left_out(tmp_path):
    path = tmp_path / "mine.pt"
    source = _save_perturbed(path)

    loaded = load_encoder("clip:recsys-test-tiny", checkpoint=path, device="cpu")
    assert loaded.name == "clip:recsys-test-tiny" and loaded.spec.tag == ""
    _assert_same_image_embeddings(loaded, source, 3)
    # without a checkpoint the tag names the weights, so it is still required
    with pytest.raises(UserError, match="malformed.*FAMILY:ARCH alone with --checkpoint"):
        load_encoder("clip:recsys-test-tiny", device="cpu")


def test_training_checkpoint_with_module_prefix_loads(tmp_path):
    source = load_encoder(TINY, device="cpu")
    state = _perturbed_state(source)
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_encoder("clip:recsys-test-tiny/mine", checkpoint=path, device="cpu")
    for key, value in state.items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_encoder(TINY, checkpoint=tmp_path / "absent.pt", device="cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt: cannot read checkpoint"):
        load_encoder(TINY, checkpoint=garbage, device="cpu")
    wide = load_encoder("clip:recsys-test-tiny-wide/random", device="cpu")
    mismatched = tmp_path / "wide.pt"
    torch.save(wide.model.state_dict(), mismatched)
    with pytest.raises(UserError, match="wide.pt: does not fit architecture recsys-test-tiny"):
        load_encoder(TINY, checkpoint=mismatched, device="cpu")
    lazy = load_encoder(TINY, checkpoint=mismatched, device="cpu", lazy=True)  # the file is read on first use
    with pytest.raises(UserError, match="does not fit"):
        lazy.encode_image_batch(torch.zeros(1, 3, 32, 32))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_register_architecture_rejects_bad_input():
    with pytest.raises(ValueError, match="may hold only"):
        register_architecture("a/b", TINY_ARCHITECTURE)
    with pytest.raises(ValueError, match="lacks text_cfg"):
        register_architecture("half", {"embed_dim": 8, "vision_cfg": {}})
