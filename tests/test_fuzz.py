"""Property tests: any prompt gives names or a PromptError; any manifest mutation a BundleError."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import unicodedata

import numpy as np

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_fixtures import make_tiny_bundle

from tina_edge.runtime import open_bundle
from tina_edge.runtime.contracts import SAMPLERS
from tina_edge.runtime.errors import BundleError, PromptError
from tina_edge.runtime.manifest import LIMITS, MIN_STD, TEMPLATE_FORMS, bundle_files, compute_bundle_id
from tina_edge.runtime.prompt import MAX_NAME_CHARS, class_key, parse_classes

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

prompt_text = st.text(alphabet=st.characters(), max_size=80) | st.lists(st.text(max_size=20), max_size=6)


@FAST
@given(prompt_text)
def test_prompts_give_names_or_prompt_error(prompt):
    try:
        names = parse_classes(prompt)
    except PromptError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert names
    for n in names:
        assert n == n.strip() and n and "," not in n and "  " not in n
        assert len(n) <= MAX_NAME_CHARS
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in n)
        assert unicodedata.normalize("NFC", n) == n
    assert len({class_key(n) for n in names}) == len(names)


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory):
    d = make_tiny_bundle(tmp_path_factory.mktemp("fuzz") / "bundle")
    return d, json.loads((d / "manifest.json").read_text())


def _paths(obj, prefix=()):
    """Every key path into the manifest (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


RULED = ("schema_version", "text_encoder", "diffusion", "denoiser", "template", "files", "producer", "portable")
_STRINGS = ["../x.onnx", "/etc/passwd", "denoiser.onnx", "sub/../template.onnx", "a\x00b", "C:\\x", "./template.onnx",
            "manifest.json", "tokenizer.json", "", "x" * 300, "ddpm", "ddim", "sample", "epsilon", "linear", "cosine",
            "inputs", "initializers", "uint8", "float32", "NHWC", "NCHW", "0" * 64, "A" * 64, "head.weight", "head.bias",
            "a//b", "x/", "\x1b[31m", "Template.onnx"]
_INTS = [0, -1, 1, 2, 3, 4, 5, 7, 513, 1000, 1001, 2049, 4097, 2**20, 2**28 + 1, 2**31, 2**63, 10**20]
_FLOATS = [0.0, -0.0, 1e-30, 1e-13, 0.01, 0.03, 0.5, 1.0, 2.0, 3.5e38, 1e39, -1e39, math.nan, math.inf, -math.inf]
_JSON = [None, True, False, 0, 1.5, "x", [], {}, [1, "a"], {"a": 1}, [[]], {"model": "x"}, math.nan]


def _text(rng: random.Random) -> str:
    return "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x10FFFF)])) for _ in range(rng.randint(0, 12)))


def _value_like(old, rng: random.Random):
    """Mostly a value of the same JSON type, often a boundary (so the rules, not the type checks, are tested)."""
    roll = rng.random()
    if roll < 0.2 or old is None or isinstance(old, (bool, list, dict)):
        return rng.choice(_JSON + [_text(rng), rng.choice(_INTS), rng.choice(_FLOATS)])
    if isinstance(old, int):
        return rng.choice(_INTS) if roll < 0.7 else rng.randint(-2**40, 2**40) if roll < 0.85 else rng.choice(_FLOATS)
    if isinstance(old, float):
        return rng.choice(_FLOATS) if roll < 0.7 else rng.uniform(-3, 3) if roll < 0.85 else rng.choice(_INTS)
    return rng.choice(_STRINGS) if roll < 0.8 else _text(rng)


def _plain_relative(name: str) -> bool:
    """The documented rule for file names: relative, normalised, printable, no '..', '\\' or ':'."""
    parts = name.split("/")
    return bool(name) and len(name) <= 255 and not name.startswith("/") and ".." not in parts and "" not in parts \
        and "." not in parts and "\\" not in name and ":" not in name and name.isprintable() and name != "manifest.json"


def _rename_file(m: dict, new: str) -> list[tuple]:
    """Rename a listed file and every field naming it (a path trick the id and the hashes cannot see)."""
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return []
    old = sorted(files)[len(new) % len(files)]
    files[new] = files.pop(old)
    # a refusal may name a well-formed new name ("bundle file x is missing"), never a path trick
    done = [("files", new) if _plain_relative(new) else ("files",)]
    for path in list(_paths(m)):
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        if path and path[0] != "files" and parent[path[-1]] == old:
            parent[path[-1]] = new
            done.append(path)
    return done


def _mutate(base: dict, rng: random.Random) -> tuple[dict, list[tuple]]:
    """1-3 deletions, replacements or file renames (mostly one: one rule at a time). The place is drawn
    uniformly group by group (the keys of one object or list: text_encoder, template.input.std,
    files['x'], ...), so every rule gets its share."""
    m = copy.deepcopy(base)
    groups = sorted({p[:-1] for p in _paths(m) if p and p[0] in RULED} | {()}, key=repr)
    done: list[tuple] = []
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
        if rng.random() < 0.1:
            done += _rename_file(m, rng.choice(_STRINGS))
            continue
        group = rng.choice(groups)
        try:
            parent = m
            for key in group:
                parent = parent[key]
            keys = [k for k in parent if k != "bundle_id"] if isinstance(parent, dict) else list(range(len(parent)))
            if not keys:
                continue
            key = rng.choice(keys)
            if rng.random() < 0.2:
                del parent[key]
            else:
                parent[key] = _value_like(parent[key], rng)
            done.append(group + (key,))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced this place
    return m, done


def _words(text: str) -> str:
    return text.lower().replace("_", " ")


def _names_a_mutated_field(message: str, mutated: list[tuple]) -> bool:
    """The refusal names the field (or the file) that was changed: some key on a mutated path."""
    return any(isinstance(k, str) and k and _words(k) in _words(message) for path in mutated for k in path)


def _assert_follows_the_rules(m) -> None:
    """What an accepted manifest must satisfy, restated from docs/RELIABILITY.md (not by calling the validator):
    a deleted rule lets some mutation through, and this fails."""
    te, dif, den, tm = m.text_encoder, m.diffusion, m.denoiser, m.template
    ints = {"diffusion.num_train_timesteps": dif.num_train_timesteps, "diffusion.default_steps": dif.default_steps,
            "text_encoder.embedding_dim": te.embedding_dim, "text_encoder.max_tokens": te.max_tokens,
            "text_encoder.pad_id": te.pad_id, "denoiser.k_max": den.k_max, "denoiser.param_count": den.param_count,
            "denoiser.embedding_dim": den.embedding_dim, "template.input.height": tm.input.height,
            "template.input.width": tm.input.width, "template.input.channels": tm.input.channels}
    for key, v in ints.items():
        lo, hi = LIMITS[key]
        assert type(v) is int and lo <= v <= hi, (key, v)
    assert den.embedding_dim == te.embedding_dim and den.k_max * den.embedding_dim <= LIMITS["conditioning.floats"][1]
    assert all(type(x) is float and math.isfinite(x) for x in (dif.beta_start, dif.beta_end))
    assert 0 < dif.beta_start <= dif.beta_end < 1 and dif.default_steps <= dif.num_train_timesteps
    assert (dif.prediction_type, dif.beta_schedule, dif.default_sampler in SAMPLERS) == ("sample", "linear", True)
    for s in (te.kind, te.name, te.cleaning, tm.name, m.producer):
        assert isinstance(s, str) and len(s) <= LIMITS["string.chars"][1]
    assert (tm.input.dtype, tm.input.layout, tm.form in TEMPLATE_FORMS) == ("uint8", "NHWC", True)
    with np.errstate(over="ignore"):  # the runtime computes in float32: 1e39 is finite only in float64
        for x in tm.input.mean + tm.input.std + [t.mean for t in tm.layout] + [t.std for t in tm.layout]:
            assert type(x) in (int, float) and math.isfinite(np.float32(x)), x
    assert all(abs(np.float32(x)) >= MIN_STD for x in tm.input.std) and len(tm.input.mean) == len(tm.input.std) == 3
    offset = 0
    for t in tm.layout:
        assert t.offset == offset and all(type(s) is int and 1 <= s for s in t.shape) and 1 <= len(t.shape) <= 8
        assert t.class_axis is None or (type(t.class_axis) is int and t.shape[t.class_axis] == den.k_max)
        assert math.isfinite(t.mean) and abs(np.float32(t.std)) >= MIN_STD
        offset += t.numel
    assert offset == den.param_count
    for name, entry in m.files.items():
        assert _plain_relative(name), name
        assert type(entry["bytes"]) is int and 0 <= entry["bytes"] <= LIMITS["file.bytes"][1]
        assert re.fullmatch("[0-9a-f]{64}", entry["sha256"])
    for _what, name in bundle_files(m):
        assert name in m.files


FUZZ_SEED = int(os.environ.get("TINA_FUZZ_SEED", "20261207"))  # fixed where CI runs; printed, so any run reproduces
FUZZ_CASES = 600


def test_manifest_mutations_give_bundle_error(fuzz_bundle):
    """A mutated manifest, re-hashed consistently (its bundle_id recomputed as the exporter does), so the
    id check passes and the manifest rules are what refuses it: a BundleError naming the changed field,
    or a bundle that follows every rule. Places are drawn uniformly with a fixed, printed seed."""
    d, base = fuzz_bundle
    print(f"manifest fuzz: TINA_FUZZ_SEED={FUZZ_SEED}, {FUZZ_CASES} cases")
    rng = random.Random(FUZZ_SEED)
    refused = 0
    for case in range(FUZZ_CASES):
        m, mutated = _mutate(base, rng)
        m["bundle_id"] = compute_bundle_id(m)
        (d / "manifest.json").write_text(json.dumps(m, allow_nan=True))
        where = f"TINA_FUZZ_SEED={FUZZ_SEED} case {case}: mutated {mutated}"
        try:
            b = open_bundle(d)
        except BundleError as e:
            refused += 1
            msg = str(e)
            assert type(e) is BundleError and msg and "\n" not in msg, (where, msg)
            assert "modified after export" not in msg and "malformed field" not in msg, (where, msg)
            assert _names_a_mutated_field(msg, mutated), (where, msg)
        else:  # a harmless mutation (evaluation, training, producer, ...): the bundle follows every rule
            try:
                _assert_follows_the_rules(b.manifest)
            except AssertionError as e:
                raise AssertionError(f"{where}: accepted, but {e}") from None
            b.close()
        finally:
            (d / "manifest.json").write_text(json.dumps(base))
    assert FUZZ_CASES // 2 < refused < FUZZ_CASES  # both outcomes happen: the mutations reach the rules
