"""The name table (issue 22 item 3): a bundle file of precomputed embeddings for names beyond the
vocabulary. The writer (export/portable/name_table.py) and the reader (runtime/name_table.py) on the
tiny bundle; personalize reads a table name from the table and encodes every other text."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tina_edge.export.portable.name_table import NAME_TABLE, NAME_VECTORS, quantise, table_bytes, write_name_table
from tina_edge.runtime.errors import BundleError
from tina_edge.runtime.name_table import NameTable


def unit(rng, n, d):
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_quantised_vectors_keep_unit_length_and_direction():
    v = unit(np.random.default_rng(0), 50, 16)
    q, s = quantise(v)
    assert q.dtype == np.int8 and s.dtype == np.float32
    back = q.astype(np.float32) * s[:, None]
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)
    assert (np.einsum("nd,nd->n", back, v) > 0.999).all()


def test_the_written_table_reads_back_by_class_key_and_sorted():
    v = unit(np.random.default_rng(1), 3, 8)
    js, npy = table_bytes(["Sea_Lion", "aardvark", "parking meter"], v, {"encoder": "test"})
    t = NameTable.from_bytes(js, npy, 8)
    assert json.loads(gzip.decompress(js))["keys"] == ["aardvark", "parking meter", "sea lion"]
    for name, row in (("SEA LION", v[0]), ("sea-lion", v[0]), ("Aardvark", v[1]), ("parking  meter", v[2])):
        got = t.get(name)
        assert got.dtype == np.float32 and got @ row > 0.999
    assert t.get("walrus") is None and t.get("sea lion (animal)") is None
    assert table_bytes(["b", "a"], v[:2], {}) == table_bytes(["b", "a"], v[:2], {})  # reproducible bytes
    with pytest.raises(ValueError, match="one class key"):
        table_bytes(["Dog", "dog"], v[:2], {})


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(keys=d["keys"][:1]), "one length"),
    (lambda d: d.update(keys=["", "b"]), "class key"),
    (lambda d: d.update(keys=["a", "a"]), "twice"),
    (lambda d: d.update(keys=["a", "mouse (rodent)"]), "without a qualifier"),
    (lambda d: d.update(scales=[1.0, -1.0]), "finite positive"),
    (lambda d: d.update(scales=[1.0, True]), "finite positive"),
    (lambda d: d.update(aliases=["a"]), "aliases"),
    (lambda d: d.update(aliases={"mouse (rodent)": "mouse"}), "aliases"),
    (lambda d: d.update(aliases={"a": 3}), "aliases"),
])
def test_malformed_tables_are_refused(change, match):
    v = unit(np.random.default_rng(2), 2, 4)
    js, npy = table_bytes(["a", "b"], v, {})
    d = json.loads(gzip.decompress(js))
    change(d)
    with pytest.raises(BundleError, match=match):
        NameTable.from_bytes(gzip.compress(json.dumps(d).encode()), npy, 4, "t.json.gz")


def test_vectors_of_another_shape_or_type_and_gzip_bombs_are_refused():
    v = unit(np.random.default_rng(3), 2, 4)
    js, npy = table_bytes(["a", "b"], v, {})
    with pytest.raises(BundleError, match=r"int8\[2, 5\]"):
        NameTable.from_bytes(js, npy, 5)
    import io

    buf = io.BytesIO()
    np.save(buf, v.astype(np.float32))
    with pytest.raises(BundleError, match="int8"):
        NameTable.from_bytes(js, buf.getvalue(), 4)
    with pytest.raises(BundleError, match="not a usable name table"):
        NameTable.from_bytes(js, b"\x93NUMPY garbage", 4)
    bomb = gzip.compress(b" " * (17 << 20))
    with pytest.raises(BundleError, match="inflates to more than"):
        NameTable.from_bytes(bomb, npy, 4)


def test_personalize_reads_table_names_from_the_table_and_encodes_the_rest(bundle, base_bundle):
    from tina_edge.runtime import Personalizer

    bundle_without = base_bundle
    p0 = Personalizer.from_bundle(bundle, threads=1)
    D = p0.manifest.text_encoder.embedding_dim
    row = unit(np.random.default_rng(4), 1, D)
    m = write_name_table(bundle, ["Narwhal"], row, {"encoder": "test"})
    assert (m.text_encoder.name_table, m.text_encoder.name_vectors) == (NAME_TABLE, NAME_VECTORS)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {NAME_TABLE, NAME_VECTORS} <= set(manifest["files"])
    p = Personalizer.from_bundle(bundle, threads=1)
    emb = p.class_embeddings("narwhal, cat")
    q, s = quantise(row)
    assert np.array_equal(emb[0], q[0].astype(np.float32) * s[0])  # bit for bit: int8 x scale in float32
    assert np.array_equal(emb[1], p.encode(["cat"])[0])  # not in the table: encoded
    assert not np.array_equal(emb[0], p.encode(["narwhal"])[0])
    assert np.array_equal(p.class_embeddings("cat, dog"), p0.class_embeddings("cat, dog"))
    clf = p.personalize("narwhal, cat", steps=2)
    assert clf.labels == ["narwhal", "cat"]
    assert p.novelty("narwhal, cat")["new"] == ["narwhal"]  # novelty compares the encoder's own reading
    from click.testing import CliRunner

    from tina_edge.cli.main import main

    r = CliRunner().invoke(main, ["info", str(bundle)])
    assert r.exit_code == 0, r.output
    assert "name table  name_table.json.gz: names outside the vocabulary" in r.output
    assert "1 nouns, 0 read as vocabulary names (WordNet synonyms); the prior graph it was solved against is not recorded" in r.output
    assert "name table" not in CliRunner().invoke(main, ["info", str(bundle_without)]).output


def test_a_tampered_table_file_is_refused_when_the_bundle_opens(bundle):
    from tina_edge.runtime import Personalizer

    D = Personalizer.from_bundle(bundle, threads=1).manifest.text_encoder.embedding_dim
    write_name_table(bundle, ["narwhal"], unit(np.random.default_rng(5), 1, D), {})
    js = json.loads(gzip.decompress((bundle / NAME_TABLE).read_bytes()))
    js["keys"] = ["walrus"]
    (bundle / NAME_TABLE).write_bytes(gzip.compress(json.dumps(js).encode()))
    with pytest.raises(BundleError, match=NAME_TABLE):
        Personalizer.from_bundle(bundle, threads=1)



def test_an_alias_reads_as_its_vocabulary_name_and_only_vocabulary_names_may_be_aliased(bundle):
    """Aliases (WordNet synonyms of vocabulary names) read as the name: its exact embedding, so its exact
    prior row; the vectors stay as they were; a target outside the vocabulary is refused by the writer
    and by the reader."""
    from tina_edge.runtime import Personalizer

    D = Personalizer.from_bundle(bundle, threads=1).manifest.text_encoder.embedding_dim
    rows = unit(np.random.default_rng(6), 2, D)
    with pytest.raises(ValueError, match="vocabulary names"):
        write_name_table(bundle, ["narwhal", "toad"], rows, {}, aliases={"toad": "newt"})
    write_name_table(bundle, ["narwhal", "toad"], rows, {}, aliases={"Toad": "frog"})
    assert json.loads(gzip.decompress((bundle / NAME_TABLE).read_bytes()))["aliases"] == {"toad": "frog"}
    p = Personalizer.from_bundle(bundle, threads=1)
    got = p.conditioning_texts(["TOAD", "narwhal", "frog"])
    assert np.array_equal(got[0], p.encode(["frog"])[0]) and np.array_equal(got[0], got[2])
    q, s = quantise(rows[:1])
    assert np.array_equal(got[1], q[0].astype(np.float32) * s[0])  # a table noun without an alias: its vector
    assert p.personalize("toad, narwhal", steps=2).labels == ["toad", "narwhal"]  # the label stays the user's
    nov = {n["name"]: n for n in p.novelty("toad, narwhal")["names"]}
    assert nov["toad"]["reads_as"] == "frog" and "reads_as" not in nov["narwhal"]  # the report says what is read
    # a table whose alias names something the vocabulary does not hold is refused when first read
    js, npy = table_bytes(["narwhal", "toad"], rows, {}, aliases={"toad": "newt"})
    (bundle / NAME_TABLE).write_bytes(js)
    from tina_edge.runtime.manifest import read_manifest, write_manifest

    write_manifest(bundle, read_manifest(bundle))  # re-hash the changed file
    with pytest.raises(BundleError, match="outside training.vocabulary"):
        Personalizer.from_bundle(bundle, threads=1).conditioning_texts(["narwhal"])


def test_aliases_are_same_synset_names_of_the_vocabulary_and_added_in_place(bundle):
    """With WordNet: a noun whose first visible sense is a vocabulary name's synset is aliased to it
    ("salientian", "toad": the frog synset); a hyponym ("stag" under deer) is not. `add_aliases`
    rewrites the bundle's table with the same vector bytes."""
    from tina_edge.export.portable.name_table import add_aliases, name_aliases
    from tina_edge.export.portable.wordnet import WordNet, find_wordnet
    from tina_edge.runtime import Personalizer

    root = find_wordnet()
    if root is None:
        pytest.skip("needs WordNet 3.0 (apt install wordnet-base)")
    wn = WordNet(str(root))
    assert name_aliases(wn, ["salientian", "toad", "stag", "narwhal"], ["frog", "deer", "cat"]) == \
        {"salientian": "frog", "toad": "frog"}
    D = Personalizer.from_bundle(bundle, threads=1).manifest.text_encoder.embedding_dim
    write_name_table(bundle, ["salientian", "stag"], unit(np.random.default_rng(7), 2, D), {"encoder": "test"})
    before = (bundle / NAME_VECTORS).read_bytes()
    assert add_aliases(bundle) == {"salientian": "frog"}
    assert (bundle / NAME_VECTORS).read_bytes() == before
    doc = json.loads(gzip.decompress((bundle / NAME_TABLE).read_bytes()))
    assert doc["aliases"] == {"salientian": "frog"} and doc["source"] == {"encoder": "test"}
    p = Personalizer.from_bundle(bundle, threads=1)
    assert np.array_equal(p.conditioning_texts(["salientian"]), p.encode(["frog"]))


def test_a_table_solved_against_another_prior_graph_is_refused(bundle, tmp_path):
    """source.prior_sha256 (recorded by the builder, or record_prior) must be the bundle's prior graph's:
    a bundle without one, or with another, refuses the table with what to do; the default bundle's matches."""
    import shutil

    from tina_edge.export.portable.name_table import record_prior
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.manifest import read_manifest

    D = Personalizer.from_bundle(bundle, threads=1).manifest.text_encoder.embedding_dim
    write_name_table(bundle, ["narwhal"], unit(np.random.default_rng(9), 1, D), {"prior_sha256": "ab" * 32})
    with pytest.raises(BundleError, match=r"solved against a prior graph with sha256 abababababab\.\.\., this bundle's is absent"):
        Personalizer.from_bundle(bundle, threads=1).conditioning_texts(["narwhal"])
    with pytest.raises(BundleError, match="solved against"):  # a refused table is not rewritten either
        record_prior(bundle)
    from click.testing import CliRunner

    from tina_edge.cli.main import main

    r = CliRunner().invoke(main, ["info", str(bundle)])
    assert r.exit_code == 0 and "refused by the runtime: the name table name_table.json.gz was solved against" in r.output

    default = Path(__file__).resolve().parents[1] / "tina_edge" / "bundles" / "default"
    copy = tmp_path / "default"
    shutil.copytree(default, copy)
    m = read_manifest(copy)
    table = json.loads(gzip.decompress((copy / NAME_TABLE).read_bytes()))
    assert table["source"]["prior_sha256"] == m.files[m.portable.prior_model]["sha256"]  # the shipped table says so
    assert record_prior(copy) == m.files[m.portable.prior_model]["sha256"]
    assert (copy / NAME_TABLE).read_bytes() == (default / NAME_TABLE).read_bytes()  # recorded already: same bytes
    p = Personalizer.from_bundle(copy, threads=1)
    assert p.conditioning_texts(["narwhal"]).shape == (1, p.manifest.text_encoder.embedding_dim)
    write_name_table(copy, ["narwhal"], unit(np.random.default_rng(9), 1, m.text_encoder.embedding_dim), {"prior_sha256": "cd" * 32})
    with pytest.raises(BundleError, match="rebuild the table"):
        Personalizer.from_bundle(copy, threads=1).conditioning_texts(["narwhal"])
