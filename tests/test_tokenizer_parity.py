"""The edge tokenizer (tokenizers + tokenizer.json) must give the exact ids training used."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from tina_edge.export.text_encoder import build_clip_tokenizer, write_tokenizer  # noqa: E402
from tina_edge.runtime.tokenizer import Tokenizer, clean_clip_text  # noqa: E402

CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "ankle boot",
]
ODD = [
    "", " ", "\t\n", "café", "naïve façade", "Ångström", "東京タワー", "北京烤鸭", "한국어", "русский медведь",
    "ελληνικά", "עברית", "العربية", "हिन्दी", "🐶", "🐶🐱 pets", "👩‍👩‍👧 family", "e\u0301clair", "a\u0308\u0301",
    "rock &amp; roll", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;", "“curly” ‘quotes’", "don’t", "it's", "IT'S",
    "we're they've I'm you'll he'd", "'ſ", "Ã©clair", "cafÃ©", "The Mona Lisa doesnâ€™t have eyebrows.",
    "ﬁsh ligature", "Ｆｕｌｌｗｉｄｔｈ", "x²", "½ cup", "K", "İstanbul", "straße", "ß", "ǅ", "\u00a0nbsp\u00a0",
    "zero\u200bwidth", "tab\tsep", "a  b   c", "line\nbreak\r\nwin", "...", "?!", "!$", "c++", "#1 dog", "3.14159",
    "2024-01-01", "$100", "100%", "a/b\\c", "(paren)", "[bracket]", "{brace}", "<start_of_text>", "<end_of_text>",
    "x <end_of_text> y", "under_score", "hyphen-ated", "ALL CAPS", "MiXeD CaSe", "1234567890", "x" * 100,
    "supercalifragilisticexpialidocious", "aaaaaaaaaaaaaaaaaaaaaaaa", "lowlowlowlowest",
    "a very long class name that goes on and on " * 6, "🙂" * 30, "東" * 40,
]
ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n  ") + list(".,;:!?'\"-_/\\()[]{}&#%$@*+=<>|~^`")
    + list("àáâäãåçèéêëìíîïñòóôöõùúûüýÿßæøœÀÉÎÕÜ") + list("东京大学猫狗鸟日本語한국")
    + ["🐶", "🐱", "🚗", "✈️", "👍🏽", "\u0301", "\u0308", "\u200b", "\u00a0", "“", "”", "’", "…", "—", "Ã", "©", "â€™"]
    + ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;"]
)


def generated(n: int = 300) -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:  # class-name-like: words from the list joined oddly
            words = rng.sample(CLASS_NAMES, rng.randint(1, 3))
            sep = rng.choice([" ", "  ", "-", "/", ", ", "\t", "_"])
            out.append(sep.join(w.upper() if rng.random() < 0.2 else w for w in words))
        else:
            out.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60 if kind < 0.9 else 200))))
    return out


TEXTS = CLASS_NAMES + ODD + generated()


def test_clean_clip_text_matches_open_clip():
    from open_clip.tokenizer import _clean_lower

    for t in TEXTS:
        assert clean_clip_text(t) == _clean_lower(t), t
    assert clean_clip_text("  Rock &amp;amp;  ROLL\n") == "rock & roll"
    assert clean_clip_text("cafÃ©") == "café"  # ftfy repairs the mojibake


@pytest.mark.parametrize("max_tokens", [16, 77])
def test_clip_ids_match_open_clip(tmp_path, max_tokens):
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()(TEXTS, context_length=max_tokens).numpy()
    path = tmp_path / "tokenizer.json"
    build_clip_tokenizer(max_tokens).save(str(path))
    ids, mask = Tokenizer.from_file(path, max_tokens=max_tokens, cleaning="clip", pad_id=0)(TEXTS)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXTS), max_tokens)
    bad = [(t, a[:8].tolist(), b[:8].tolist()) for t, a, b in zip(TEXTS, ids, ref) if not np.array_equal(a, b)]
    assert not bad, f"{len(bad)} of {len(TEXTS)} differ, e.g. {bad[:3]}"
    last_eot = max_tokens - 1 - np.argmax(ref[:, ::-1] == 49407, axis=1)
    np.testing.assert_array_equal(mask, (np.arange(max_tokens) <= last_eot[:, None]).astype(np.int64))
    assert ids[TEXTS.index("!$")].tolist()[:4] == [49406, 0, 259, 49407]  # "!" is id 0, yet not padding
    assert mask[TEXTS.index("!$")].tolist()[:5] == [1, 1, 1, 1, 0]


def test_clip_truncation_keeps_end_token(tmp_path):
    path = tmp_path / "tokenizer.json"
    build_clip_tokenizer(16).save(str(path))
    tok = Tokenizer.from_file(path, max_tokens=16, cleaning="clip")
    ids, mask = tok(["word " * 50, ""])
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and mask[0].sum() == 16  # truncated, not an error
    assert ids[1, :2].tolist() == [49406, 49407] and mask[1].sum() == 2 and ids[1, 2:].sum() == 0


def test_clip_cleaning_matters(tmp_path):
    """Without the cleaning step the same tokenizer.json gives other ids: the spec must carry it."""
    path = tmp_path / "tokenizer.json"
    build_clip_tokenizer(16).save(str(path))
    raw, _ = Tokenizer.from_file(path, max_tokens=16, cleaning="none")(["Rock &amp; Roll"])
    clean, _ = Tokenizer.from_file(path, max_tokens=16, cleaning="clip")(["Rock &amp; Roll"])
    assert not np.array_equal(raw, clean)


def test_minilm_ids_match_transformers(tmp_path):
    from tina_edge.train.text.encoders import MiniLMEncoder

    enc = MiniLMEncoder()
    path = tmp_path / "tokenizer.json"
    cleaning, pad_id = write_tokenizer(enc, path)
    assert (cleaning, pad_id) == ("none", 0)
    ids, mask = Tokenizer.from_file(path, max_tokens=enc.max_tokens, cleaning=cleaning, pad_id=pad_id)(TEXTS)
    ref = enc.hf_tokenizer(TEXTS, padding="max_length", truncation=True, max_length=enc.max_tokens,
                           return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert ids[TEXTS.index("")].tolist()[:3] == [101, 102, 0]


def test_bad_tokenizer_file_is_a_bundle_error(tmp_path):
    from tina_edge.runtime.errors import BundleError

    p = tmp_path / "tokenizer.json"
    p.write_text("{not json")
    with pytest.raises(BundleError, match="re-export"):
        Tokenizer.from_file(p, max_tokens=16)
    build_clip_tokenizer(16).save(str(p))
    with pytest.raises(BundleError, match="cleaning"):
        Tokenizer.from_file(p, max_tokens=16, cleaning="weird")
