"""The whole server chain at toy size: generic -> zoo -> diffusion -> eval -> export -> runtime.

One tiny work directory and one bundle are built per module (about a minute on 2 cores); the
tests then check the zoo's bookkeeping, the report, the bundle and runtime-vs-torch parity.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_samplers import reference_sample_ddpm
from tina_edge.runtime.template import denormalise
from tina_edge.train.diffusion.checkpoint import read_checkpoint

from train_fixtures import synthetic_universe, tiny_workdir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the module fixtures train a tiny Tina and export a bundle


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_workdir(tmp_path_factory.mktemp("tina"), diffusion_steps=150)


@pytest.fixture(scope="module")
def bundle(workdir):
    from tina_edge.export.bundle import export_bundle

    out = workdir.parent / "bundle"
    summary = export_bundle(workdir / "tina.safetensors", out, log=lambda m: None)
    return out, summary


def test_zoo_index_resume_and_shards(workdir, tmp_path):
    from tina_edge.train.zoo.generic import load_generic
    from tina_edge.train.stages.small import _inputs
    from tina_edge.train.zoo.tasks import TaskSplit
    from tina_edge.train.zoo.templates import ParamLayout
    from tina_edge.train.zoo.pmodels import TaskData, build_zoo

    index = json.loads((workdir / "zoo" / "index.json").read_text())
    split = TaskSplit.load(workdir / "tasks.json")
    assert len(index) == len(split.zoo) == 24
    for e in index:
        assert e["classes"] == split.zoo[e["id"]] and e["k"] == len(e["classes"])
        assert "orange wave" not in e["classes"]  # the holdout never enters the zoo
    ids = {frozenset(t) for t in split.id_test}
    assert not any(frozenset(t) in ids for t in split.zoo)
    assert np.mean([e["accuracy"] for e in index]) > 100.0 / 2.5  # well above chance for k in 2..4

    train, test = synthetic_universe()
    model, cfg, classes, _ = load_generic(workdir / "generic.safetensors")
    layout = ParamLayout(cfg)
    tr = TaskData(_inputs(workdir, cfg, model, train, "train"), train.labels, classes)
    te = TaskData(_inputs(workdir, cfg, model, test, "test"), test.labels, classes)
    sd = model.state_dict()
    again = build_zoo(workdir / "zoo", sd, layout, tr, te, split.zoo, group=8, steps=20, progress=False)
    assert again["done"] == 0 and again["skipped"] == 24  # resumable: nothing redone
    tasks = split.zoo[:6]
    s0 = build_zoo(tmp_path / "z", sd, layout, tr, te, tasks, shard=(0, 2), group=8, steps=5, progress=False)
    s1 = build_zoo(tmp_path / "z", sd, layout, tr, te, tasks, shard=(1, 2), group=8, steps=5, progress=False)
    assert s0["done"] == 3 and s1["done"] == 3 and s0["per_minute"] > 0
    assert [e["id"] for e in json.loads((tmp_path / "z" / "index.json").read_text())] == list(range(6))


def test_eval_report(workdir):
    from tina_edge.train.configs import EvalOptions
    from tina_edge.train.stages.small import stage_eval

    train, test = synthetic_universe()
    res = stage_eval(workdir, train, test, EvalOptions(sampler="ddim", steps=10, progress=False))
    s = res["summary"]
    assert s["id"]["n"] == 4 and s["ood"]["n"] == 3
    assert set(s["ood_per_class"]) == {"orange wave"}
    rec = s["holdout_recall"]  # recall on the held-out class's own images, per method
    assert set(rec) >= {"generated", "fine-tuned", "selection", "chance"}
    assert all(0.0 <= rec[m] <= 100.0 for m in ("generated", "fine-tuned", "selection"))
    assert rec["fine-tuned"] > rec["chance"]
    assert s["id"]["fine-tuned"] > s["id"]["chance"] + 20
    report = (workdir / "eval" / "report.md").read_text()
    assert "| ID | 4 |" in report and "generated" in report
    png = (workdir / "eval" / "accuracy_vs_k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bundle_files_and_parity(bundle):
    from tina_edge.runtime.bundle import open_bundle

    path, summary = bundle
    from tina_edge.export.portable.wordnet import find_wordnet

    senses = {"senses.json.gz"} if find_wordnet() else set()  # the WordNet sense table, where WordNet is installed
    assert set(summary["files"]) == {"text_encoder.onnx", "tokenizer.json", "denoiser.onnx", "template.onnx",
                                     "generate.onnx", "tokenizer_config.json", "vocabulary_embeddings.npy"} | senses
    # + portable (one template: weights as inputs); + the training vocabulary encoded for the novelty report
    import numpy as np

    m = open_bundle(path).manifest
    emb = np.load(path / m.text_encoder.vocabulary_embeddings, allow_pickle=False)
    assert emb.dtype == np.float16 and emb.shape == (len(m.vocabulary), m.text_encoder.embedding_dim)
    assert summary["denoiser"]["max_abs_diff"] <= 1e-4
    assert summary["template"]["max_abs_diff_logits"] <= 1e-3
    assert summary["text_encoder"]["max_abs_diff_fp32"] <= 1e-4
    assert summary["personalize_max_abs_diff"] <= 1e-3
    assert not list(path.glob("*.onnx.data"))
    m = open_bundle(path).manifest
    assert m.k_max == 4 and m.training.holdout_classes == ["orange wave"]
    assert "orange wave" not in m.vocabulary and "red square" in m.vocabulary


class _RuntimeDraws:
    """The runtime's noise order for one seed: x_T from the portable generator, then step noise from numpy."""

    def __init__(self, seed: int):
        from tina_edge.runtime.noise import PortableNoise

        self._first, self._rest = PortableNoise(seed), np.random.default_rng(seed)
        self._started = False

    def standard_normal(self, shape):
        if not self._started:
            self._started = True
            return self._first.standard_normal(shape)
        return self._rest.standard_normal(shape)


def test_runtime_ddpm_1000_matches_torch_reference(bundle, workdir):
    from tina_edge.runtime import Personalizer

    path, _ = bundle
    ck = read_checkpoint(workdir / "tina.safetensors")
    p = Personalizer.from_bundle(path, threads=1)
    names = ["blue dot", "red square", "yellow ring"]
    clf = p.personalize(names, sampler="ddpm", seed=11)
    layout = ck.layout()
    emb = torch.zeros(1, 4, 384)
    emb[0, :3] = torch.from_numpy(p.encode(names))
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    x = reference_sample_ddpm(ck.denoiser(), ck.schedule(), emb, mask, _RuntimeDraws(11))
    ref = denormalise(x[0].numpy(), layout.specs, 3)
    diff = max(float(np.abs(clf.params[n] - ref[n]).max()) for n in ref)
    assert diff <= 1e-3, diff


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_every_k_and_ddim_steps_give_working_models(bundle, steps):
    from tina_edge.runtime import Personalizer

    path, _ = bundle
    p = Personalizer.from_bundle(path, threads=1)
    _, test = synthetic_universe()
    names = ["red square", "green stripe", "blue dot", "yellow ring"]
    correct = by_chance = 0.0
    for k in range(2, 5):
        clf = p.personalize(names[:k], steps=steps, seed=k)
        assert clf.labels == names[:k]
        sel = np.isin(test.labels, range(k))
        pred = clf.predict(test.images[sel])
        assert pred.probabilities.shape == (int(sel.sum()), k)
        assert np.allclose(pred.probabilities.sum(1), 1.0, atol=1e-5)
        correct += float((pred.indices == test.labels[sel]).sum())  # rows in prompt order = class ids 0..k-1
        by_chance += sel.sum() / k
    # measured (150-step toy Tina): 100 of 180 right at every step count, against 60 expected by chance
    assert correct >= 1.4 * by_chance, (correct, by_chance)


def test_runtime_model_accuracy_equals_torch_generated(bundle, workdir):
    """Same parameters in the standalone ONNX and in the torch template: same accuracy."""
    from tina_edge.runtime import Personalizer
    from tina_edge.train.zoo.generic import load_generic
    from tina_edge.train.zoo.templates import build_model

    path, _ = bundle
    p = Personalizer.from_bundle(path, threads=1)
    _, test = synthetic_universe()
    names = ["red square", "green stripe", "blue dot"]
    clf = p.personalize(names, seed=5)
    sel = np.isin(test.labels, range(3))
    onnx_pred = clf.predict(test.images[sel]).indices
    generic, cfg, _, _ = load_generic(workdir / "generic.safetensors")
    net = build_model(cfg, 3).eval()
    sd = generic.state_dict()
    sd.update({n: torch.from_numpy(v) for n, v in clf.params.items()})
    net.load_state_dict(sd)
    with torch.no_grad():
        torch_pred = net(torch.from_numpy(test.images[sel])).argmax(-1).numpy()
    y = test.labels[sel]
    acc_onnx, acc_torch = (onnx_pred == y).mean() * 100, (torch_pred == y).mean() * 100
    assert abs(acc_onnx - acc_torch) <= 0.2


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'open_clip', 'transformers', 'torchvision'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from tina_edge.runtime import Personalizer
clf = Personalizer.from_bundle(sys.argv[1]).personalize(['red square', 'blue dot'], seed=1)
clf.save(sys.argv[2])
print([m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'transformers')])
"""


def test_exported_bundle_personalizes_with_torch_blocked(bundle, tmp_path):
    path, _ = bundle
    out = subprocess.run([sys.executable, "-c", BLOCKER, str(path), str(tmp_path / "m.onnx")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == ["red square", "blue dot"]
    logits, probs = sess.run(None, {"image": np.zeros((8, 32, 32, 3), np.uint8)})
    assert probs.shape == (8, 2)


def test_template_export_is_reproducible(workdir, tmp_path):
    """Re-exporting gives the same bytes (so a re-exported bundle keeps its id)."""
    from tina_edge.export.graphs import export_template

    ck = read_checkpoint(workdir / "tina.safetensors")
    export_template(ck.layout(), ck.prefixed("generic."), tmp_path / "a.onnx")
    export_template(ck.layout(), ck.prefixed("generic."), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_export_writes_the_portable_files(bundle):
    """`tina-edge export` adds generate.onnx & co. (docs/PORTABLE.md); generate.onnx = the runtime's DDIM."""
    import onnxruntime as ort

    from tina_edge.runtime.noise import portable_normal
    from tina_edge.runtime.personalizer import Personalizer

    out, summary = bundle
    p = Personalizer.from_bundle(out, threads=1)
    m = p.manifest
    assert {"generate.onnx", "tokenizer_config.json"} <= set(summary["files"]) and "template_inputs.onnx" not in summary["files"]
    names = (m.vocabulary or ["a", "b"])[:2]
    clf = p.personalize(names, seed=4)
    K, D, P = m.k_max, m.text_encoder.embedding_dim, m.denoiser.param_count
    ce = np.zeros((1, K, D), np.float32)
    ce[0, :2] = p.encode(names)
    mask = np.zeros((1, K), np.float32)
    mask[0, :2] = 1
    x0 = ort.InferenceSession(str(out / "generate.onnx"), providers=["CPUExecutionProvider"]).run(
        ["x0"], {"class_emb": ce, "class_mask": mask, "noise": portable_normal(4, (1, P))})[0]
    want = denormalise(x0[0], m.template.layout, 2)
    for n, a in clf.params.items():
        np.testing.assert_allclose(a, want[n], atol=1e-5, rtol=0)
