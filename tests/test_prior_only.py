"""The generator as the text prior alone (`tina-edge convert --prior-only`, BENCHMARKS §15): the
correction output zeroed in the graphs (export/portable/prior_only.py), `portable.prior.only`, and
personalize skipping every denoiser step with parameters bit-identical to running them."""

import hashlib

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from bundle_variants import with_correction, with_steps
from runtime_fixtures import make_tiny_bundle
from tina_edge.cli.main import main
from tina_edge.export.portable.prior_only import correction_initializers, is_prior_only, zero_correction
from tina_edge.runtime.bundle import default_bundle_path, open_bundle
from tina_edge.runtime.errors import BundleError
from tina_edge.runtime.manifest import PortableInfo, read_manifest
from tina_edge.runtime.personalizer import Personalizer

FLAGS = ["--keep-template-shapes", "--no-everyday-keys"]  # what this test does not need: faster


def _convert(src, out, *extra):
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), *FLAGS, *extra])
    return r


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """(source with a correction, prior-only bundle, the prior-only bundle with `only` dropped from its
    manifest: the full DDIM path over the zeroed correction)."""
    root = tmp_path_factory.mktemp("prior_only")
    with_correction(root / "raw")
    r = _convert(root / "raw", root / "src")
    assert r.exit_code == 0, r.output
    assert not read_manifest(root / "src").portable.prior_only  # a non-zero correction: not the prior alone
    r = _convert(root / "src", root / "po", "--prior-only")
    assert r.exit_code == 0, r.output
    with_steps(root / "steps", root / "po")
    return root / "po", root / "steps", root / "src"


def _inits(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_convert_zeroes_the_correction_and_records_it(bundles):
    po, _, source = bundles
    m = read_manifest(po)
    assert m.portable.prior_only and m.portable.prior["only"] is True
    den = onnx.load(str(po / "denoiser.onnx"))
    names = correction_initializers(den.graph)
    assert "row_out.bias" in names and len(names) == 2  # the MatMul weight (torch names it onnx::MatMul_N) and the bias
    src = _inits(source / "denoiser.onnx")
    assert all(np.any(src[n]) for n in names)  # the source's correction is not zero
    for graph in ("denoiser.onnx", "generate.onnx"):
        w = _inits(po / graph)
        assert all(w[n].shape == src[n].shape and not np.any(w[n]) for n in names), graph
    w = _inits(po / "denoiser.onnx")
    assert all(np.array_equal(w[n], src[n]) for n in w if n not in names and n in src)  # nothing else changed
    assert is_prior_only(den) and not is_prior_only(onnx.load(str(source / "denoiser.onnx")))
    assert is_prior_only(onnx.load(str(default_bundle_path() / "denoiser.onnx")))  # the shipped default: the prior alone


@pytest.mark.parametrize("prompt, seed", [("cat, dog", 0), ("sea cucumber, obelisk, tabby cat, goldfish", 7),
                                          (", ".join(f"thing {i}" for i in range(25)), 3)])  # 25: two groups
def test_the_shortcut_is_bit_identical_to_the_steps(bundles, prompt, seed):
    """DDIM in Python steps, DDIM as generate.onnx, DDPM: the same bytes without running a step."""
    po, steps, _ = bundles
    short = Personalizer.from_bundle(po, threads=1)
    full = Personalizer.from_bundle(steps, threads=1)
    short._denoiser = None  # would fail if a step ran
    for sampler, n, gen in (("ddim", None, False), ("ddim", None, True), ("ddpm", 10, False), ("ddim", 3, False)):
        short.use_generate = full.use_generate = gen
        a = short.personalize(prompt, seed=seed, sampler=sampler, steps=n).params
        b = full.personalize(prompt, seed=seed, sampler=sampler, steps=n).params
        assert a.keys() == b.keys()
        assert all(a[k].tobytes() == b[k].tobytes() for k in a), (sampler, n, gen)
    assert short._gen is None and full._gen is not None  # generate.onnx never loaded by the shortcut


def test_seed_and_candidates_change_nothing(bundles):
    p = Personalizer.from_bundle(bundles[0], threads=1)
    a = p.personalize("cat, dog, goldfish", seed=0).params
    b = p.personalize("cat, dog, goldfish", seed=2**62 + 5, candidates=3).params
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def _digest(d):
    return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in sorted(read_manifest(d).files)}


def test_converting_twice_changes_nothing(bundles, tmp_path):
    po, _, _ = bundles
    for extra in (["--prior-only"], []):  # a prior-only bundle stays one without the flag too
        r = _convert(po, tmp_path / f"again{len(extra)}", *extra)
        assert r.exit_code == 0, r.output
        assert read_manifest(tmp_path / f"again{len(extra)}").bundle_id == read_manifest(po).bundle_id
        assert _digest(tmp_path / f"again{len(extra)}") == _digest(po)


def test_a_bundle_without_a_split_prior_is_refused(tmp_path):
    make_tiny_bundle(tmp_path / "tiny")
    r = _convert(tmp_path / "tiny", tmp_path / "out", "--prior-only")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith("error: denoiser.onnx has no text prior split into its own graph")
    assert not (tmp_path / "out").exists()


def test_a_graph_without_a_correction_output_is_refused(tmp_path):
    make_tiny_bundle(tmp_path / "tiny")
    den = onnx.load(str(tmp_path / "tiny" / "denoiser.onnx"))
    assert correction_initializers(den.graph) == [] and not is_prior_only(den)
    with pytest.raises(BundleError, match=r"^denoiser.onnx has no correction output \(row_out\) to zero; --prior-only"):
        zero_correction(den, "denoiser.onnx")


def test_a_malformed_only_field_is_refused():
    with pytest.raises(BundleError, match="manifest field portable.prior.only must be true or false"):
        PortableInfo.from_dict({"prior": {"model": "prior.onnx", "only": "yes"}}, "portable")
    assert not PortableInfo.from_dict({"prior": {"model": "prior.onnx"}}, "portable").prior_only


def test_info_says_the_seed_changes_nothing(bundles):
    r = CliRunner().invoke(main, ["info", str(bundles[0])])
    assert r.exit_code == 0, r.output
    assert "the text prior alone (no denoiser step; seed and noise change nothing)" in r.output
    assert "(measured at training, with the denoiser's correction; this bundle runs the text prior alone" in r.output
    steps = CliRunner().invoke(main, ["info", str(bundles[1])])
    assert steps.exit_code == 0 and "measured at training, with the denoiser's correction" not in steps.output
    open_bundle(bundles[1]).close()


def test_rows_scatter_by_the_layout_and_other_layouts_are_refused():
    """Slot j's row = [W_j, b_j]: rows [B, K, R] land at the layout's offsets; no class axis: refused."""
    from tina_edge.runtime.manifest import TensorSpec
    from tina_edge.runtime.prior_only import prior_x0, row_segments

    layout = [TensorSpec("w", [3, 2], 0, 0), TensorSpec("b", [3], 6, 0)]
    assert row_segments(layout, 3, 3) == [(0, 2), (6, 1)]
    rows = np.arange(9, dtype=np.float32).reshape(1, 3, 3) - 8  # rows [-8 -7 -6], [-5 -4 -3], [-2 -1 0]
    x = prior_x0(rows, np.array([[1, 1, 0]], np.float32), layout, 9)
    assert x.tolist() == [[-8, -7, -5, -4, 0, 0, -6, -3, 0]]
    assert not np.signbit(x[0, [4, 5, 8]]).any()  # masked slot: 0 + (-2 * 0) is +0, as the denoiser graph computes
    with pytest.raises(BundleError, match=r"^the generated tensor s has no leading class axis of K_max 3; the prior alone"):
        row_segments([TensorSpec("s", [4], 0, None)], 3, 4)
    with pytest.raises(BundleError, match=r"^the prior rows hold 4 numbers but the layout's rows hold 3"):
        row_segments(layout, 3, 4)


def test_personalize_says_no_step_runs(bundles, tmp_path):
    for bundle, said in ((bundles[0], "the text prior alone (no denoiser step; seed and candidates change nothing), bundle "),
                         (bundles[1], "ddim 5 steps, seed 0, 1 candidate(s), bundle ")):
        r = CliRunner().invoke(main, ["personalize", "dog, cat", "-o", str(tmp_path / "m.onnx"), "--bundle", str(bundle), "--force"])
        assert r.exit_code == 0, r.output
        assert said in r.output, r.output


def test_personalize_json_says_prior_only_and_each_names_sense(bundles, tmp_path):
    import json

    r = CliRunner().invoke(main, ["personalize", "dog, crane (bird)", "-o", str(tmp_path / "m.onnx"), "--bundle",
                                  str(bundles[0]), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    assert d["prior_only"] is True
    by = {n["name"]: n for n in d["names"]}
    assert by["crane (bird)"]["sense"]["how"] == "qualifier" and by["dog"]["sense"]["sense"] == "dog (animal)"
