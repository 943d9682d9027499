"""Property tests: any prompt gives names or a PromptError; any manifest mutation a BundleError."""

from __future__ import annotations

import copy
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_fixtures import make_tiny_bundle

from tina_edge.runtime import open_bundle
from tina_edge.runtime.errors import BundleError, PromptError
from tina_edge.runtime.prompt import MAX_NAME_CHARS, class_key, parse_classes

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["../x.onnx", "/etc/passwd", "denoiser.onnx", "sub/../template.onnx", "a\x00b", "C:\\x"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_manifest_mutations_give_bundle_error(fuzz_bundle, data):
    d, base = fuzz_bundle
    m = copy.deepcopy(base)
    paths = [p for p in _paths(m) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = m
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, (dict, list)):
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced this path
    text = json.dumps(m, allow_nan=True)
    (d / "manifest.json").write_text(text)
    try:
        b = open_bundle(d)
    except BundleError as e:
        assert str(e)
    else:  # a harmless mutation (evaluation, training, producer, ...): the bundle must be complete
        assert b.manifest.template.param_count == b.manifest.denoiser.param_count
    finally:
        (d / "manifest.json").write_text(json.dumps(base))
