"""The text prior (issue 12): ImageNet rows kept out by the holdout, calibrated ridge rows, and a
denoiser that starts from the prior and exports it inside its ONNX graph."""

import numpy as np
import pytest
import torch

from tina_edge.train.diffusion.denoiser import DenoiserConfig, build_denoiser
from tina_edge.train.prior.imagenet_rows import ImageNetClass, norm_matched_rows, usable_extras
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.prior.fit import (KERNEL_GAMMAS, build_text_prior, class_keys, fit_kernel_prior, fit_text_prior,
                                       kernel_features)
from tina_edge.train.diffusion.text_prior import TextPrior, row_normalisation


def _cls(wnid, *names, d="a thing"):
    return ImageNetClass(wnid, list(names), d, np.zeros(1281, np.float32))


def test_holdout_synsets_names_and_synonyms_never_reach_training():
    universe = [
        {"name": "tabby", "synonyms": ["tabby cat"], "id": "n02123045", "holdout": True},
        {"name": "police van", "synonyms": ["paddy wagon", "wagon"], "id": "n03977966", "holdout": True},
        {"name": "goldfish", "synonyms": [], "id": "n01443537", "holdout": False},
        {"name": "horse", "synonyms": [], "id": "cifar10:horse", "holdout": True},
    ]
    classes = [_cls("n02123045", "tabby", "tabby cat"),  # the held-out synset itself
               _cls("n09999991", "Tabby Cat"),  # another synset named like a held-out synonym (case)
               _cls("n02814533", "beach wagon", "station wagon", "wagon"),  # 'wagon' = a held-out synonym
               _cls("n01443537", "goldfish"),  # a seen universe class: its zoo rows speak for it
               _cls("n02389026", "sorrel"),  # a horse, by another name: allowed
               _cls("n01440764", "tench", "Tinca tinca")]
    kept, dropped = usable_extras(classes, universe)
    assert [c.wnid for c in kept] == ["n02389026", "n01440764"]
    assert dropped == ["n02123045", "n09999991", "n02814533"]


def test_norm_matched_rows_take_the_zoo_scale_and_bias():
    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 0.1, (50, 1281))
    center = rng.normal(0, 0.01, 1281)
    out = norm_matched_rows(rows, center, weight_norm=2.5, bias=-0.25)
    c = out - center
    assert np.linalg.norm(c[:, :-1], axis=1).mean() == pytest.approx(2.5, rel=1e-4)
    assert np.all(out[:, -1] == np.float32(-0.25))
    # directions kept: the centred inputs and outputs are parallel row by row
    a = rows[:, :-1] - rows[:, :-1].mean(0)
    cos = (a * c[:, :-1]).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c[:, :-1], axis=1)
    assert cos.min() > 0.9999


def _linear_problem(n=300, d=16, r=1281, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    true = rng.normal(size=(d, r))
    return x, x @ true + 0.01 * rng.normal(size=(n, r)), true


def test_fit_recovers_a_linear_map_and_calibrates_rows():
    x, y, _ = _linear_problem()
    zoo = y[:100]
    fit = fit_text_prior(x[:100], y[:100], x, y, zoo)
    pred = x[250:] @ fit.coef + fit.offset
    rel = np.linalg.norm(pred - y[250:]) / np.linalg.norm(y[250:])
    assert rel < 0.05, rel
    prior = TextPrior(16, 1281)
    flags = np.r_[np.ones(1280), 0.0]
    prior.load_fit(fit, flags, np.zeros(1281), np.ones(1281))
    rows = prior.raw_rows(torch.from_numpy(x[250:]).float()).numpy()
    centred = rows - fit.center
    np.testing.assert_allclose(np.linalg.norm(centred[:, :-1], axis=1), fit.weight_norm, rtol=1e-4)
    np.testing.assert_allclose(rows[:, -1], fit.bias, atol=1e-6)
    # calibration rescales but keeps each prediction's direction (fp16 coef: cosine, not equality)
    p = pred[:, :-1] - fit.center[:-1]
    cos = (p * centred[:, :-1]).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(centred[:, :-1], axis=1)
    assert cos.min() > 0.999


def _layout():
    lay = ParamLayout(TemplateConfig(name="lite0_head", k_max=4, image_size=64))
    for s in lay.specs:
        s.mean, s.std = 0.01, 0.5
    return lay


def _prior_model(lay, text_dim=16, keys=0, kernel=False):
    x, y, _ = _linear_problem(d=text_dim)
    fit, info = build_text_prior(zoo_rows=y[:60], seen_emb=x[:60], extra=None, kernel=kernel)
    assert info["seen_classes"] == 60 and info["pairs"] == 60 and not info["imagenet"]
    assert info["map"] == ("kernel" if kernel else "linear")
    cfg = DenoiserConfig(param_count=lay.size, chunks=lay.chunks(2048), k_max=lay.k_max, text_dim=text_dim,
                         hidden=16, layers=1, heads=2, row_segments=lay.row_segments(), text_prior=True,
                         prior_keys=keys, prior_input=not keys, prior_kernel=60 if kernel else 0)
    torch.manual_seed(0)
    m = build_denoiser(cfg).eval()
    m.prior.load_fit(fit, *row_normalisation(lay))
    if keys:
        m.prior.load_keys(x[:keys], y[:keys] + 0.3)
    return m


def test_denoiser_prediction_is_the_prior_plus_a_correction():
    lay = _layout()
    m = _prior_model(lay)
    with torch.no_grad():
        m.row_out.weight.zero_()
        m.row_out.bias.zero_()
    emb = torch.nn.functional.normalize(torch.randn(2, 4, 16), dim=-1)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        out = m(torch.randn(2, lay.size), torch.tensor([3, 700]), emb * mask[..., None], mask)
    rows = torch.cat([out[:, :4 * 1280].view(2, 4, 1280), out[:, 4 * 1280:].view(2, 4, 1)], -1)
    want = m.prior(emb) * mask[..., None]
    torch.testing.assert_close(rows, want, atol=1e-5, rtol=1e-5)
    assert float(rows[0, 3].abs().max()) == 0.0  # a padded slot gets no prior
    # in parameter units, row 0's weight part has the zoo's norm around the zoo's mean row
    raw = m.prior.raw_rows(emb[0, :1])[0]
    assert float((raw[:-1] - m.prior.center[:-1]).norm()) == pytest.approx(float(m.prior.calib[0]), rel=1e-4)


@pytest.mark.parametrize("keys,kernel", [(0, False), (12, False), (12, True)])
def test_prior_travels_in_the_checkpoint_state_and_the_onnx_graph(tmp_path, keys, kernel):
    from tina_edge.export.graphs import export_denoiser

    lay = _layout()
    m = _prior_model(lay, keys=keys, kernel=kernel)
    assert tuple(m.prior.coef.shape) == ((60, 1281) if kernel else (16, 1281))
    assert hasattr(m, "prior_in") == (keys == 0)
    twin = build_denoiser(m.cfg)
    assert float(twin.prior.coef.abs().sum()) == 0.0
    twin.load_state_dict(m.state_dict())  # buffers are persistent: a checkpoint carries the prior
    assert torch.equal(twin.prior.coef, m.prior.coef) and twin.prior.coef.dtype == torch.float16
    res = export_denoiser(m, tmp_path / "denoiser.onnx")
    assert res["max_abs_diff"] <= 1e-4


def test_extra_classes_replace_real_slots_rows_and_texts_together():
    from tina_edge.train.diffusion.trainer import TinaData, make_batch

    lay = ParamLayout(TemplateConfig(name="lite0_head", k_max=3, image_size=64))
    flats = torch.zeros(4, lay.size)
    valids = torch.zeros(4, lay.size, dtype=torch.bool)
    for i in range(4):  # 2 real classes per p-model: rows filled with the class id + 1
        for j, c in enumerate([i % 3, (i + 1) % 3]):
            flats[i, j * 1280 : (j + 1) * 1280] = c + 1
            flats[i, 3 * 1280 + j] = c + 1
            valids[i, j * 1280 : (j + 1) * 1280] = True
            valids[i, 3 * 1280 + j] = True
    table = torch.eye(3, 8)
    extra_rows = torch.stack([torch.full((1281,), -1.0), torch.full((1281,), -2.0)])
    bank = torch.zeros(2, 2, 8)
    bank[0, 0, 3], bank[1, 0, 4], bank[1, 1, 5] = 1, 1, 1
    data = TinaData(flats, valids, [[i % 3, (i + 1) % 3] for i in range(4)], table, ["a", "b", "c"],
                    extra_rows=extra_rows, extra_bank=bank, extra_counts=torch.tensor([1, 2]), extra_rate=0.5)
    g = torch.Generator().manual_seed(0)
    seen_sub = seen_real = 0
    for _ in range(30):
        x0, valid, emb, mask = make_batch(data, lay, torch.arange(4), g)
        for b in range(4):
            for j in range(3):
                w, bias, e = x0[b, j * 1280 : (j + 1) * 1280], x0[b, 3 * 1280 + j], emb[b, j]
                if mask[b, j] == 0:
                    assert float(w.abs().sum()) == 0 and float(e.abs().sum()) == 0
                    continue
                assert bool((w == w[0]).all()) and float(bias) == float(w[0])  # a whole row, bias included
                if float(w[0]) < 0:  # an extra class: its text is one of ITS phrasings
                    seen_sub += 1
                    k = int(-w[0]) - 1
                    assert int(e.argmax()) in ({3} if k == 0 else {4, 5}) and float(e.sum()) == 1.0
                else:
                    seen_real += 1
                    assert int(e.argmax()) == int(w[0]) - 1
    assert 0.3 < seen_sub / (seen_sub + seen_real) < 0.7


def _bump_problem(n=400, d=8, r=1281, seed=0):
    """Rows that are a smooth but bent function of the text (a sum of bumps around 12 directions),
    one text per class: a new class is predictable from its neighbours, but not linearly."""
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(12, d))
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    mix = rng.normal(size=(12, r))

    def rows(x):
        return np.exp(4.0 * (x @ anchors.T - 1.0)) @ mix

    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rows


def test_kernel_map_bends_where_a_linear_map_cannot():
    x, rows = _bump_problem()
    train, new = x[:300], x[300:]
    y = rows(train)
    lin = fit_text_prior(train, y, train, y, y)
    ker = fit_kernel_prior(train, y, train, y, np.arange(300), y)
    assert ker.kernel_keys.shape == (300, 8) and ker.coef.shape == (300, 1281) and ker.gamma in KERNEL_GAMMAS
    np.testing.assert_allclose(ker.kernel_keys, train, atol=1e-6)  # one text per class: its own key

    def rel(pred):
        want = rows(new)
        return np.linalg.norm(pred - want) / np.linalg.norm(want - want.mean(0))

    lin_err = rel(new @ lin.coef + lin.offset)
    ker_err = rel(kernel_features(new, ker.kernel_keys, ker.gamma) @ ker.coef + ker.offset)
    assert ker_err < 0.6 * lin_err, (ker_err, lin_err)  # classes never fitted, predicted from neighbours
    # the module computes the same map (float16 buffers), then calibrates it like the linear prior
    with pytest.raises(ValueError, match="does not fit"):
        TextPrior(8, 1281).load_fit(ker, np.r_[np.ones(1280), 0.0], np.zeros(1281), np.ones(1281))
    prior = TextPrior(8, 1281, kernel=300)
    prior.load_fit(ker, np.r_[np.ones(1280), 0.0], np.zeros(1281), np.ones(1281))
    got = prior.raw_rows(torch.from_numpy(new).float()).numpy()[:, :-1] - ker.center[:-1]
    want = (kernel_features(new, ker.kernel_keys, ker.gamma) @ ker.coef + ker.offset - ker.center)[:, :-1]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), ker.weight_norm, rtol=1e-4)


def test_kernel_keys_are_the_mean_text_of_each_class():
    x = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    keys = class_keys(x, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(keys, [[2 ** -0.5, 2 ** -0.5, 0], [0, 0, 1]], atol=1e-12)


def test_kernel_term_returns_seen_rows_and_leaves_other_words_on_the_ridge_row():
    x, y, _ = _linear_problem(d=16)
    fit = fit_text_prior(x[:60], y[:60], x[:60], y[:60], y[:60])
    flags = np.r_[np.ones(1280), 0.0]
    plain, kern = TextPrior(16, 1281), TextPrior(16, 1281, keys=20)
    for p in (plain, kern):
        p.load_fit(fit, flags, np.zeros(1281), np.ones(1281))
    target = y[:20] + 0.5  # "zoo rows" far from what the ridge map predicts
    kern.load_keys(x[:20], target)
    keys = torch.from_numpy(x[:20]).float()
    got = kern.raw_rows(keys).numpy()
    np.testing.assert_allclose(got, target, atol=5e-3 * np.abs(target).max())
    assert np.abs(plain.raw_rows(keys).numpy() - target).mean() > 0.3  # the ridge row alone is elsewhere
    far = torch.from_numpy(x[100:120]).float()  # random unit vectors: cosine to every key well below 0.95
    assert float((far @ keys.t()).max()) < 0.95
    torch.testing.assert_close(kern.raw_rows(far), plain.raw_rows(far), atol=1e-3, rtol=1e-3)
    assert float(kern.raw_rows(torch.zeros(1, 16)).abs().max()) < 1e3  # a padded slot stays finite


def test_exact_fp16_initializers_are_stored_as_fp16_losslessly(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tina_edge.export.graphs import store_exact_fp16

    rng = np.random.default_rng(0)
    exact = rng.normal(size=(4, 20000)).astype(np.float16).astype(np.float32)  # 80,000 exact fp16 values
    inexact = rng.normal(size=(4, 20000)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["a"]), helper.make_node("MatMul", ["x", "B"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 20000])],
        [numpy_helper.from_array(exact, "A"), numpy_helper.from_array(inexact, "B")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    size = path.stat().st_size
    assert store_exact_fp16(path) == exact.nbytes // 2
    m = onnx.load(str(path))
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert types == {"A_fp16": TensorProto.FLOAT16, "B": TensorProto.FLOAT}
    assert path.stat().st_size < size - 150_000
    np.testing.assert_array_equal(ort.InferenceSession(str(path)).run(None, {"x": x})[0], before)
    assert store_exact_fp16(path) == 0  # idempotent


def test_prior_only_checkpoint_generates_exactly_the_prior(tmp_path):
    from click.testing import CliRunner

    from tina_edge.cli.main import main as cli
    from tina_edge.train.diffusion.checkpoint import prior_only_checkpoint
    from tina_edge.train.diffusion.trainer import TinaData, Trainer, TrainConfig
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    lay = _layout()
    m = _prior_model(lay, keys=12)
    flats = torch.zeros(2, lay.size)
    valids = torch.zeros(2, lay.size, dtype=torch.bool)
    data = TinaData(flats, valids, [[0, 1], [1, 2]], torch.eye(3, 16), ["a", "b", "c"])
    t = Trainer(m.cfg, lay, data, TrainConfig(steps=1, batch_size=2, warmup=1))
    t.model.load_state_dict(m.state_dict())
    t.ema.load_state_dict(m.state_dict())
    t.extra_meta = {"text_prior": {"kind": "zoo"}}
    src, dst = tmp_path / "tina.safetensors", tmp_path / "prior.safetensors"
    t.save(src)
    assert prior_only_checkpoint(src, dst) == {"kind": "zoo", "prior_only": True}
    den = read_checkpoint(dst).denoiser()
    emb = torch.nn.functional.normalize(torch.randn(3, 4, 16), dim=-1)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        out = den(torch.randn(3, lay.size), torch.tensor([999, 500, 1]), emb * mask[..., None], mask)
        rows = torch.cat([out[:, :4 * 1280].view(3, 4, 1280), out[:, 4 * 1280:].view(3, 4, 1)], -1)
        torch.testing.assert_close(rows, den.prior(emb) * mask[..., None], atol=1e-6, rtol=1e-6)
        assert float((read_checkpoint(src).denoiser().row_out.weight).abs().sum()) > 0  # the source is untouched
    r = CliRunner().invoke(cli, ["train", "prior-only", "--ckpt", str(src), "-o", str(src)])
    assert r.exit_code == 2 and "must name a new file" in r.output
