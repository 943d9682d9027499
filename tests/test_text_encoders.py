"""Training-side text encoders: shapes, norms, meaning, agreement with references, cache, factory."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from tina_edge.runtime.errors import TinaEdgeError  # noqa: E402
from tina_edge.train.text.encoders import (  # noqa: E402
    TINY_CLIP_ARCH, EmbeddingCache, MiniLMEncoder, OpenCLIPEncoder, TextEncoder, build_text_encoder,
    cached_encode,
)

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "ankle boot"]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def tiny_clip() -> OpenCLIPEncoder:
    return OpenCLIPEncoder(TINY_CLIP_ARCH)


def test_minilm_shapes_and_norms(minilm):
    e = minilm.encode(NAMES)
    assert e.shape == (10, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.encode([""]).shape == (1, 384)
    tok = minilm.tokenize(["dog", "a " * 100])
    assert tok["input_ids"].shape == (2, 48) and tok["input_ids"].dtype == np.int64
    assert tok["attention_mask"].sum(1).tolist() == [3, 48]  # [CLS] dog [SEP]; long text truncated


def test_minilm_semantics(minilm):
    dog, puppy, plane = minilm.encode(["dog", "puppy", "airplane"])
    assert dog @ puppy > dog @ plane + 0.2


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm.model_dir), device="cpu").encode(NAMES, normalize_embeddings=True)
    cos = np.sum(ref * minilm.encode(NAMES), axis=1)
    assert cos.min() > 0.9999, cos


def test_open_clip_matches_encode_text_and_reloads(tiny_clip, tmp_path):
    import torch

    e = tiny_clip.encode(NAMES)
    assert e.shape == (10, 64)
    with torch.no_grad():
        ref = tiny_clip.model.encode_text(tiny_clip.tokenizer(NAMES), normalize=True).numpy()  # full 77 context
    np.testing.assert_allclose(e, ref, atol=1e-5)
    for suffix in (".pt", ".safetensors"):
        ckpt = tiny_clip.save_checkpoint(tmp_path / f"tiny{suffix}")
        again = build_text_encoder(f"open_clip:{TINY_CLIP_ARCH}:{ckpt}")
        np.testing.assert_array_equal(again.encode(NAMES), e)
        assert again.cache_key != tiny_clip.cache_key and str(ckpt) in again.name
    other = OpenCLIPEncoder(TINY_CLIP_ARCH, seed=1)
    assert np.abs(other.encode(NAMES) - e).max() > 0.1  # the seed decides the random weights


def test_open_clip_images(tiny_clip):
    import torch

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    e = tiny_clip.encode_images(imgs)
    assert e.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        m = tiny_clip.image_module()(torch.from_numpy(imgs)).numpy()
    np.testing.assert_allclose(m, e, atol=1e-5)
    big = tiny_clip.encode_images([rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)])  # resized + cropped
    assert big.shape == (1, 64)


class CountingEncoder(TextEncoder):
    """Wraps a real encoder and counts the texts it is asked to embed."""

    def __init__(self, inner: TextEncoder):
        self.inner, self.kind, self.name = inner, inner.kind, inner.name
        self.dim, self.max_tokens, self.calls, self.texts = inner.dim, inner.max_tokens, 0, 0

    def tokenize(self, texts):
        return self.inner.tokenize(texts)

    def torch_module(self):
        return self.inner.torch_module()

    def encode(self, texts, batch_size: int = 256):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts)


def test_cache_hits_do_not_call_the_model(minilm, tmp_path):
    enc = CountingEncoder(minilm)
    first = cached_encode(enc, NAMES[:6], tmp_path)
    assert (enc.calls, enc.texts) == (1, 6)
    np.testing.assert_array_equal(first, minilm.encode(NAMES[:6]))
    again = cached_encode(enc, NAMES[:6][::-1], tmp_path)  # a new cache object reads the files
    assert enc.calls == 1
    np.testing.assert_array_equal(again, first[::-1])
    both = cached_encode(enc, NAMES + NAMES[:2], tmp_path)  # only the 4 new texts are encoded
    assert (enc.calls, enc.texts) == (2, 10)
    np.testing.assert_array_equal(both[:6], first)
    assert both.shape == (12, 384)
    other = EmbeddingCache(tmp_path, "another-encoder")
    assert other.get(NAMES[:1]) == (None, NAMES[:1])  # keyed by encoder: no sharing
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["embeddings.npy", "index.json"]


def test_build_text_encoder(minilm):
    assert build_text_encoder("minilm").name == "all-MiniLM-L6-v2"
    assert build_text_encoder(f"minilm:{minilm.model_dir}").dim == 384
    assert build_text_encoder(f"open_clip:{TINY_CLIP_ARCH}").name == f"open_clip:{TINY_CLIP_ARCH}:random-seed0"
    with pytest.raises(TinaEdgeError, match="unknown text encoder spec 'bert'.*minilm"):
        build_text_encoder("bert")
    with pytest.raises(TinaEdgeError, match="empty"):
        build_text_encoder("")
    with pytest.raises(TinaEdgeError, match="needs an architecture"):
        build_text_encoder("open_clip:")
    with pytest.raises(TinaEdgeError, match="unknown open_clip architecture 'ViT-Nope'"):
        build_text_encoder("open_clip:ViT-Nope")
    with pytest.raises(TinaEdgeError, match="not a known tag or valid file path"):
        build_text_encoder(f"open_clip:{TINY_CLIP_ARCH}:/no/such/ckpt.pt")
    with pytest.raises(TinaEdgeError, match="not a sentence-transformers model folder"):
        build_text_encoder("minilm:/no/such/dir")
