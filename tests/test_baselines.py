"""Baselines, paired statistics and the comparison harness on a synthetic feature universe.

Classes live in a 16-d "text" space; each class's image features are a fixed linear map of its
text embedding plus noise, so a text -> row map can generalise to held-out classes (as real
encoders + trunks do, imperfectly) and a lookup of the nearest seen class cannot do as well.
"""

import numpy as np
import pytest
import torch

from tina_edge.train.evaluation.baselines import (DirectConfig, direct_generator, nearest_known, pack_rows, unpack_rows,
                                                  zoo_class_rows)
from tina_edge.train.prior.ridge import fit_ridge
from tina_edge.train.evaluation.compare import EvalTask, compare, fit_baselines, make_eval_tasks
from tina_edge.train.evaluation.evaluate import write_compare_report
from tina_edge.train.evaluation.stats import format_diff, paired_difference
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.zoo.pmodels import TaskData, finetune_batch


def test_paired_difference_matches_hand_computation_and_clusters():
    a, b = [70.0, 80.0, 90.0, 60.0], [60.0, 80.0, 70.0, 70.0]
    d = paired_difference(a, b, clusters=["x", "x", "y", "y"])
    diffs = np.array([10.0, 0.0, 20.0, -10.0])
    assert d["mean"] == pytest.approx(5.0)
    assert d["se"] == pytest.approx(diffs.std(ddof=1) / 2)
    assert (d["wins"], d["losses"], d["n"]) == (2, 1, 4)
    assert d["cluster_mean"] == pytest.approx(5.0) and d["clusters"] == 2  # (5 + 5) / 2
    assert d["cluster_se"] == pytest.approx(0.0)
    assert format_diff(d).startswith("+5.0 ± ")
    nan = paired_difference([1.0, np.nan], [0.0, 3.0])  # pairs with a missing side are dropped
    assert nan["n"] == 1 and nan["mean"] == 1.0


def test_ridge_loo_equals_brute_force_and_unit_rows_are_calibrated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = x @ rng.normal(size=(5, 4)) + 0.3 * rng.normal(size=(30, 4))
    lam = 2.0
    m = fit_ridge(x, y, lambdas=np.array([lam]))
    loo = []
    for i in range(30):  # refit without point i (intercept unpenalised: centre on the rest)
        keep = np.arange(30) != i
        xm, ym = x[keep].mean(0), y[keep].mean(0)
        xc, yc = x[keep] - xm, y[keep] - ym
        coef = np.linalg.solve(xc.T @ xc + lam * np.eye(5), xc.T @ yc)
        loo.append(((x[i] - xm) @ coef + ym - y[i]) ** 2)
    assert m.loo_mse == pytest.approx(float(np.mean(loo)), rel=1e-6)
    auto = fit_ridge(x, y)
    assert auto.loo_mse <= m.loo_mse + 1e-9  # the grid search finds at least as good a penalty
    u = fit_ridge(x, y, unit_rows=True)
    pred = u.predict(x[:3])
    assert np.allclose(np.linalg.norm(pred[:, :-1], axis=1), np.linalg.norm(y[:, :-1], axis=1).mean(), rtol=1e-5)


def test_nearest_known_skips_classes_already_in_the_task():
    emb = np.eye(3, dtype=np.float32)
    q = np.array([0.9, 0.5, 0.0], np.float32)
    assert nearest_known(q, emb, np.array([0, 1, 2]), set())[0] == 0
    c, sim = nearest_known(q, emb, np.array([0, 1, 2]), {0})
    assert c == 1 and sim == pytest.approx(0.5 / np.linalg.norm(q))


def synthetic(C=14, D=16, Fdim=32, n=60, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(C, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    A = rng.normal(size=(D, Fdim)).astype(np.float32)
    proto = emb @ A

    def split(n_per):
        x = np.concatenate([proto[c] + 0.8 * rng.normal(size=(n_per, Fdim)) for c in range(C)]).astype(np.float32)
        return torch.from_numpy(x), np.repeat(np.arange(C), n_per)

    names = [f"class {c}" for c in range(C)]
    (xtr, ytr), (xte, yte) = split(n), split(n // 2)
    return names, emb, TaskData(xtr, ytr, names), TaskData(xte, yte, names)


@pytest.fixture(scope="module")
def universe():
    names, emb, train, test = synthetic()
    table = dict(zip(names, emb))
    holdout, seen = names[-3:], names[:-3]
    layout = ParamLayout(TemplateConfig("resnet_head", k_max=5, widths=[8, 8, 32], stem_stride=2))
    # generic head on all classes, then a zoo of p-models over seen classes (the real recipe)
    W = torch.zeros(len(names), 32, requires_grad=True)
    bvec = torch.zeros(len(names), requires_grad=True)
    opt = torch.optim.Adam([W, bvec], lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(train.inputs @ W.T + bvec, torch.from_numpy(np.repeat(np.arange(14), 60)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    generic = {"fc.weight": W.detach(), "fc.bias": bvec.detach()}
    rng = np.random.default_rng(1)
    tasks = [list(rng.choice(len(seen), rng.integers(2, 6), replace=False)) for _ in range(60)]
    ft = finetune_batch(generic, layout, train, tasks, steps=30)
    flats = torch.stack([layout.flatten({s: ft[s][m, : len(t)] for s in ("fc.weight", "fc.bias")})[0]
                         for m, t in enumerate(tasks)])
    entries = [{"classes": [seen[i] for i in t]} for t in tasks]
    zoo_rows, counts = zoo_class_rows(layout, flats, entries, names)
    return dict(names=names, table=table, holdout=holdout, seen=seen, layout=layout, train=train, test=test,
                generic=generic, zoo_rows=zoo_rows, counts=counts)


def test_rows_round_trip_and_zoo_rows_only_for_seen_classes(universe):
    lay = universe["layout"]
    p = {"fc.weight": torch.randn(3, 32), "fc.bias": torch.randn(3)}
    back = unpack_rows(lay, pack_rows(lay, p))
    assert all(torch.equal(back[k], p[k]) for k in p)
    assert torch.isnan(universe["zoo_rows"][-3:]).all() and (universe["counts"][-3:] == 0).all()
    assert torch.isfinite(universe["zoo_rows"][:-3]).all()


def test_compare_scores_every_method_and_the_text_maps_generalise(universe, tmp_path):
    u = universe
    encode = lambda texts: np.stack([u["table"][t] for t in texts])  # noqa: E731 (the universe's text space)
    b = fit_baselines(layout=u["layout"], classes=u["names"], seen=u["seen"], zoo_rows=u["zoo_rows"], encode=encode,
                      train=u["train"], generic_rows=pack_rows(u["layout"], u["generic"]),
                      direct_cfg=DirectConfig(hidden=64, steps=300, k_max=5), progress=False)
    tasks = make_eval_tasks(u["seen"], u["holdout"], n_id=20, n_ood=60, k_max=5, seed=0)
    assert sum(t.kind == "ood" for t in tasks) == 60
    assert all(len(t.probes) in (1, 2) and all(t.classes[p] in u["holdout"] for p in t.probes)
               for t in tasks if t.kind == "ood")
    # the direct network in the generator's place exercises the generated paths on identical code
    gen = direct_generator(b.direct, u["layout"])
    res = compare(tasks, layout=u["layout"], classes=u["names"], test=u["test"], encode=encode, baselines=b,
                  generator=gen, train=u["train"], generic_sd=u["generic"], finetune_steps=20, progress=False,
                  extra_generators={"same-net": gen})  # an "ablation" that must tie with the main generator
    s = res["summary"]
    assert s["ood"]["recall"]["generated"]["mean"] == pytest.approx(s["ood"]["recall"]["direct"]["mean"], abs=1e-6)
    assert s["ood"]["diff_recall"]["direct"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert s["ood"]["methods"][:3] == ["generated", "generated-lookup", "same-net"]
    assert s["ood"]["diff_recall"]["same-net"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # generated-lookup: held-out names replaced by the nearest seen name: other rows, other recall
    assert s["ood"]["recall"]["generated-lookup"]["mean"] != s["ood"]["recall"]["generated"]["mean"]
    assert s["id"]["acc"]["generated-lookup"] == s["id"]["acc"]["generated"]  # all names known: same prompts
    assert "zoo-average" not in s["ood"]["acc"]  # undefined when a name is not in the vocabulary
    assert s["id"]["acc"]["zoo-average"]["mean"] > 80 and s["id"]["acc"]["fine-tuned"]["mean"] > 80
    rec = {m: s["ood"]["recall"][m]["mean"] for m in s["ood"]["recall"]}
    assert rec["direct"] > rec["chance"] + 20 and rec["ridge-l2"] > rec["chance"] + 20
    # the lookup baseline puts another class's row in the held-out slot
    for r in res["tasks"]:
        if r["kind"] == "ood":
            assert len(r["slot_recall_nearest-seen"]) == r["k"]
    report = write_compare_report(res, tmp_path)
    text = report.read_text()
    assert "| direct |" in text and "Held-out recall per class" in text
    assert (tmp_path / "baselines.png").stat().st_size > 1000


def test_gloss_and_phrasing_tasks_have_twins():
    from tina_edge.train.text.phrasings import ClassPhrasings

    seen, hold = [f"s{i}" for i in range(8)], ["h0", "h1"]
    ph = {c: ClassPhrasings(c, None, [], [f"{c} other"] if c == "s1" else [], f"what {c} is") for c in seen + hold}
    tasks = make_eval_tasks(seen, hold, n_id=3, n_ood=10, k_max=4, phrasings=ph, n_phrasing=4, seed=0)
    gloss = [t for t in tasks if t.kind == "gloss"]
    assert len(gloss) == 10
    for t in gloss:
        twin = tasks[t.twin]
        assert twin.kind == "ood" and twin.classes == t.classes
        assert all(t.texts[p] == f"what {t.classes[p]} is" for p in t.probes)
    phr = [t for t in tasks if t.kind == "phrasing"]
    assert len(phr) == 4 and all(t.texts[t.probes[0]] == "s1 other" and tasks[t.twin].texts[t.probes[0]] == "s1"
                                 for t in phr)
    assert isinstance(phr[0], EvalTask)


def test_run_comparison_on_a_work_directory(universe, tmp_path):
    """The work-dir layout of the photo universe (classes.json, features, zoo files, generic head)."""
    import json

    from safetensors.torch import save_file

    from tina_edge.train.evaluation.compare_stage import run_comparison

    u = universe
    words = ["dog", "cat", "horse", "sheep", "truck", "ship", "airplane", "frog", "deer", "bird", "sandal",
             "sneaker", "coat", "shirt"]  # real words, so the real text encoder has something to work with
    wd = tmp_path / "wd"
    (wd / "features").mkdir(parents=True)
    (wd / "zoo" / "pmodels").mkdir(parents=True)
    hold = set(words[-3:])
    (wd / "classes.json").write_text(json.dumps([{"name": w, "synonyms": [], "id": f"toy:{w}", "holdout": w in hold}
                                                 for w in words]))
    for split, td in (("train", u["train"]), ("test", u["test"])):
        np.save(wd / "features" / f"{split}_32.f16.npy", td.inputs.numpy().astype(np.float16))
        labels = np.concatenate([np.full(len(ix), c) for c, ix in enumerate(td.by_class)])
        np.save(wd / "features" / f"{split}_32.labels.npy", labels)
    save_file({k: v.contiguous() for k, v in u["generic"].items()}, str(wd / "generic.safetensors"))
    rng = np.random.default_rng(0)
    seen_idx = [i for i, w in enumerate(words) if w not in hold]
    for m in range(20):
        t = list(rng.choice(seen_idx, 3, replace=False))
        rows = u["zoo_rows"][t]
        save_file({"fc.weight": rows[:, :-1].contiguous(), "fc.bias": rows[:, -1].contiguous()},
                  str(wd / "zoo" / "pmodels" / f"{m:05d}.safetensors"),
                  metadata={"tina_edge": json.dumps({"classes": [words[i] for i in t]})})
    res = run_comparison(wd, tmp_path / "out", n_id=6, n_ood=12, n_phrasing=4, k_max=4, finetune=True,
                         direct_cfg=DirectConfig(hidden=32, steps=30), emb_cache=tmp_path / "cache", progress=False)
    s = res["summary"]
    assert s["ood"]["n"] == 12 and set(s["ood"]["recall"]) >= {"fine-tuned", "selection", "ridge", "ridge-l2",
                                                               "nearest-seen", "direct", "chance"}
    assert res["setup"]["holdout"] == 3 and (tmp_path / "out" / "report.md").is_file()
