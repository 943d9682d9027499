"""Row-token denoiser for wide heads (one token per classifier row) and the phrasing bank in training."""

import pytest
import torch

from tina_edge.train.diffusion.denoiser import DenoiserConfig, RowTokenDenoiser, TinaDenoiser, build_denoiser
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.diffusion.trainer import TinaData, make_batch


def layout(k_max=5):
    return ParamLayout(TemplateConfig(name="lite0_head", k_max=k_max, image_size=64))


def model(lay, seed=0):
    torch.manual_seed(seed)
    cfg = DenoiserConfig(param_count=lay.size, chunks=lay.chunks(2048), k_max=lay.k_max, text_dim=8, hidden=16,
                         layers=2, heads=2, row_segments=lay.row_segments())
    return build_denoiser(cfg).eval()


def test_rows_are_1281_numbers_and_the_sequence_is_k_plus_1():
    lay = layout()
    m = model(lay)
    assert isinstance(m, RowTokenDenoiser) and m.row_dim == 1281
    assert lay.row_segments() == [[0, 1280], [5 * 1280, 1]]
    assert m.pos.shape[0] == 1  # one timestep token; rows carry no position (slots are exchangeable)


def test_permuting_class_slots_permutes_the_output_rows():
    lay = layout()
    m = model(lay)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, lay.size, generator=g)
    emb = torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    t = torch.tensor([10, 900])
    perm = torch.tensor([2, 0, 1, 3, 4])
    with torch.no_grad():
        out = m(x, t, emb * mask[..., None], mask)
        outp = m(lay.permute_classes(x, perm), t, emb[:, perm] * mask[:, perm, None], mask[:, perm])
    torch.testing.assert_close(outp, lay.permute_classes(out, perm), atol=1e-5, rtol=1e-5)


def test_padded_slots_do_not_change_real_rows():
    lay = layout()
    m = model(lay)
    x = torch.randn(1, lay.size)
    emb = torch.randn(1, 5, 8)
    mask = torch.tensor([[1.0, 1, 0, 0, 0]])
    x2 = x.clone()
    x2[:, 2 * 1280 : 5 * 1280] = 7.0  # garbage in the padded rows
    with torch.no_grad():
        a = m(x, torch.tensor([5]), emb * mask[..., None], mask)
        b = m(x2, torch.tensor([5]), emb * mask[..., None], mask)
    real = torch.cat([torch.arange(0, 2 * 1280), torch.arange(5 * 1280, 5 * 1280 + 2)])
    torch.testing.assert_close(a[:, real], b[:, real], atol=1e-5, rtol=1e-5)


def test_bank_draws_one_phrasing_per_class_within_its_count():
    lay = ParamLayout(TemplateConfig(name="lite0_head", k_max=3, image_size=64))
    bank = torch.zeros(4, 3, 8)
    for c in range(4):
        for v in range(3):
            bank[c, v, 0], bank[c, v, 1] = c, v  # identifiable rows
    counts = torch.tensor([1, 2, 3, 3])
    flats = torch.zeros(6, lay.size)
    data = TinaData(flats=flats, valids=torch.ones_like(flats, dtype=torch.bool),
                    class_ids=[[0, 1], [1, 2, 3]] * 3, emb_table=bank, vocabulary=list("abcd"), emb_counts=counts)
    gen = torch.Generator().manual_seed(0)
    seen = {c: set() for c in range(4)}
    for _ in range(30):
        _, _, emb, mask = make_batch(data, lay, torch.arange(6), gen)
        for row, m in zip(emb.reshape(-1, 8), mask.reshape(-1)):
            if m:
                seen[int(row[0])].add(int(row[1]))
    assert seen == {0: {0}, 1: {0, 1}, 2: {0, 1, 2}, 3: {0, 1, 2}}


def test_build_denoiser_names_the_variant_and_the_base_refuses_to_be_built():
    from tina_edge.train.diffusion.denoiser import ChunkTokenDenoiser

    lay = layout()
    assert type(model(lay)) is RowTokenDenoiser
    chunk_cfg = DenoiserConfig(param_count=lay.size, chunks=lay.chunks(2048), k_max=lay.k_max, text_dim=8, hidden=16,
                               layers=1, heads=2)
    assert type(build_denoiser(chunk_cfg)) is ChunkTokenDenoiser
    with pytest.raises(TypeError, match="build_denoiser"):
        TinaDenoiser(chunk_cfg)
