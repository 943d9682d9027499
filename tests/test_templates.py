"""Templates and the flat parameter layout: round trips, permutation, chunking."""

import pytest
import torch

from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig, build_model, param_class_slot

TEMPLATES = [TemplateConfig("tiny_cnn", k_max=10), TemplateConfig("resnet_head", k_max=10, stem_stride=2)]


@pytest.mark.parametrize("cfg", TEMPLATES, ids=lambda c: c.name)
def test_sizes_match_the_paper(cfg):
    lay = ParamLayout(cfg)
    if cfg.name == "tiny_cnn":
        assert lay.size == 16 * 27 + 32 * 16 * 9 + 32 * 10 + 10 == 5370  # "~5K params"
    else:
        assert lay.size == 64 * 10 + 10


@pytest.mark.parametrize("cfg", TEMPLATES, ids=lambda c: c.name)
@pytest.mark.parametrize("k", range(2, 11))
def test_flatten_unflatten_round_trip_every_k(cfg, k):
    lay = ParamLayout(cfg)
    model = build_model(cfg, k)
    sd = {s.name: model.state_dict()[s.name] for s in lay.specs}
    flat, valid = lay.flatten(sd)
    assert flat.shape == (lay.size,)
    back = lay.unflatten(flat, k)
    for name, t in sd.items():
        assert torch.equal(back[name], t)
    # padded class rows are zero and marked invalid
    n_valid = sum(t.numel() for t in sd.values())
    assert int(valid.sum()) == n_valid
    assert float(flat[~valid].abs().sum()) == 0.0


def test_k_outside_range_is_refused():
    lay = ParamLayout(TEMPLATES[1])
    with pytest.raises(ValueError, match="outside 2..10"):
        lay.unflatten(torch.zeros(lay.size), 11)
    with pytest.raises(ValueError, match="outside 2..10"):
        lay.unflatten(torch.zeros(lay.size), 1)


@pytest.mark.parametrize("cfg", TEMPLATES, ids=lambda c: c.name)
def test_permuting_classes_permutes_the_outputs(cfg):
    """The augmentation: shuffling class order and permuting rows alike keeps the function."""
    torch.manual_seed(0)
    k = 6
    lay = ParamLayout(cfg)
    model = build_model(cfg, k).eval()
    sd = {s.name: model.state_dict()[s.name] for s in lay.specs}
    flat, _ = lay.flatten(sd)
    perm = torch.cat([torch.randperm(k), torch.arange(k, lay.k_max)])
    permuted = lay.unflatten(lay.permute_classes(flat, perm), k)
    model2 = build_model(cfg, k).eval()
    full = model.state_dict()
    full.update(permuted)
    model2.load_state_dict(full)
    x = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model2(x), model(x)[:, perm[:k]], atol=1e-5)


@pytest.mark.parametrize("cfg", TEMPLATES, ids=lambda c: c.name)
def test_chunks_cover_once_and_never_cross_tensors(cfg):
    lay = ParamLayout(cfg)
    chunks = lay.chunks(64)
    covered = torch.zeros(lay.size, dtype=torch.long)
    bounds = [(s.offset, s.offset + s.numel) for s in lay.specs]
    for start, length in chunks:
        assert 1 <= length <= 64
        covered[start : start + length] += 1
        assert any(a <= start and start + length <= b for a, b in bounds)
    assert torch.equal(covered, torch.ones(lay.size, dtype=torch.long))
    if cfg.name == "resnet_head":  # one token per class row of the head
        assert chunks[:10] == [(i * 64, 64) for i in range(10)]
    slot = param_class_slot(lay)
    assert int(slot.max()) == lay.k_max - 1
