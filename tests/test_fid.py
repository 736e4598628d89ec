"""The TF-FID Inception (raydiff.engine.fid): pytorch-fid's weight-file layout loads into
it strictly, its mixed blocks pool as TensorFlow's graph does where torchvision's differ,
and its 2048-d features feed FID. Random weights only: nothing is downloaded."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydiff.engine.fid import (INCEPTION_NAMES, InceptionFeatures, embed, fid, inception_name,
                                tf_fid_inception_v3)

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_weights(tf_block, tv_block):
    tv_block.load_state_dict(tf_block.state_dict())     # strict: the same keys, too
    return tf_block.eval(), tv_block.eval()


@pytest.fixture(scope="module")
def tf_weights(tmp_path_factory):
    """A state dict in the TF-FID file's layout (1008-way fc), randomly initialised, its
    batch-norm statistics set from one batch so activations keep their scale through the
    48 layers (with the default 0/1 statistics the features shrink to ~1e-8)."""
    torch.manual_seed(0)
    net = tf_fid_inception_v3()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0                            # running stats := this batch's
    with torch.no_grad():
        net.train()(torch.rand(2, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("tffid") / "pt_inception-2015-12-05-random.pth"
    torch.save(net.eval().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tf_net(tf_weights):
    return InceptionFeatures(tf_weights)


def test_the_tf_fid_layout_loads_strictly_and_is_named_fid_inception(tf_weights, tf_net,
                                                                     tmp_path):
    from torchvision.models import inception_v3

    from raydiff.experiments._gasten import load_feature_net

    state = torch.load(tf_weights, weights_only=True)
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)         # no aux classifier
    assert inception_name(tf_weights) == "inception" == INCEPTION_NAMES["tf_fid"]
    assert tf_net.name == "inception" and not tf_net.net.transform_input
    fn, name = load_feature_net({"name": "inception", "weights_path": str(tf_weights)})
    assert f"fid_{name}" == "fid_inception"          # the step-2 stage's metric name

    # strict: one missing tensor and the file is refused, not half-loaded
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k != "Mixed_7c.branch_pool.conv.weight"},
               partial)
    with pytest.raises(RuntimeError, match="Mixed_7c.branch_pool.conv.weight"):
        InceptionFeatures(partial)

    # torchvision's layout (1000-way, aux classifier) still gives its own network and name
    tv = tmp_path / "inception_v3_google.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tv)
    _, name = load_feature_net({"name": "inception", "weights_path": str(tv)})
    assert name == "inception_tv" == inception_name(tv)


def test_the_tf_blocks_sit_where_the_tf_graph_has_them():
    from torchvision.models.inception import InceptionB, InceptionD

    from raydiff.engine.fid import TFInceptionA, TFInceptionC, TFInceptionE

    net = tf_fid_inception_v3()
    assert all(type(getattr(net, f"Mixed_5{c}")) is TFInceptionA for c in "bcd")
    assert all(type(getattr(net, f"Mixed_6{c}")) is TFInceptionC for c in "bcde")
    assert type(net.Mixed_6a) is InceptionB and type(net.Mixed_7a) is InceptionD
    assert type(net.Mixed_7b) is TFInceptionE and not net.Mixed_7b.max_pool
    assert type(net.Mixed_7c) is TFInceptionE and net.Mixed_7c.max_pool
    assert net.AuxLogits is None and net.fc.out_features == 1008


@pytest.mark.parametrize("kind", ["A", "C", "E"])
def test_average_pools_leave_the_padding_out_only_at_the_border(kind):
    # the same weights in torchvision's block and the TF one: inside the image both pool
    # over 9 real pixels; on the border TF divides by the real pixels (4 or 6), so only the
    # pool branch (the last channels) differs, and only there
    from torchvision.models import inception as tv

    from raydiff.engine import fid as fidmod

    torch.manual_seed(1)
    make = {"A": (lambda c: c(192, pool_features=32), 192, 32),
            "C": (lambda c: c(768, channels_7x7=128), 768, 192),
            "E": (lambda c: c(1280), 1280, 192)}
    build, channels, pool_channels = make[kind]
    tf_block, tv_block = _same_weights(build(getattr(fidmod, f"TFInception{kind}")),
                                       build(getattr(tv, f"Inception{kind}")))
    x = torch.rand(2, channels, 6, 6) + 0.5                 # > 0: padding zeros pull means down
    with torch.no_grad():
        a, b = tf_block(x), tv_block(x)
    assert a.shape == b.shape
    torch.testing.assert_close(a[:, :-pool_channels], b[:, :-pool_channels], rtol=0, atol=0)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])   # the interior
    border = torch.ones(6, 6, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    gap = (a[:, -pool_channels:] - b[:, -pool_channels:]).abs()[..., border]
    assert (gap.amax(1) > 1e-4 * a.abs().max()).all()      # every border pixel differs


def test_the_last_block_max_pools():
    # Mixed_7c and Mixed_7b with the same weights differ only in the pool: a constant input
    # (max = padding-free mean everywhere) gives the same output; one spike (max keeps it
    # whole over its 3x3 neighbourhood, the mean divides it by 9) only the pool channels
    # differ, and only next to the spike
    from raydiff.engine.fid import TFInceptionE

    torch.manual_seed(2)
    max_block, avg_block = _same_weights(TFInceptionE(2048, max_pool=True),
                                         TFInceptionE(2048, max_pool=False))
    with torch.no_grad():
        flat = torch.full((1, 2048, 5, 5), 0.7)
        torch.testing.assert_close(max_block(flat), avg_block(flat))
        spike = torch.zeros(1, 2048, 5, 5)
        spike[:, :, 2, 2] = 9.0
        m, a = max_block(spike), avg_block(spike)
    torch.testing.assert_close(m[:, :-192], a[:, :-192], rtol=0, atol=0)
    gap = (m[:, -192:] - a[:, -192:]).abs().amax(1)[0]      # (5, 5)
    near = torch.zeros(5, 5, dtype=torch.bool)
    near[1:4, 1:4] = True
    assert (gap[near] > 1e-4 * m.abs().max()).all() and (gap[~near] == 0).all()


def test_features_are_pool3_of_the_image_scaled_to_minus_one_one(tf_net):
    torch.manual_seed(3)
    net = tf_net
    grey = torch.rand(2, 1, 28, 28) * 2 - 1                 # GAN output in [-1, 1]
    with torch.no_grad():
        feats = net(grey)
        assert feats.shape == (2, 2048)
        # grey repeated to 3 channels; TF-FID's input is the [0, 1] image resized to 299
        # and scaled to [-1, 1], i.e. here the [-1, 1] image resized (no ImageNet mean/std)
        rgb = grey.repeat(1, 3, 1, 1)
        torch.testing.assert_close(net(rgb), feats)
        resized = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False)
        bare, unscaled = net.net(resized), net.net((resized + 1) / 2)
    # float32 through 48 layers: the two roundings of the scaling drift by ~1e-4
    tol = 1e-3 * feats.abs().max().item()
    torch.testing.assert_close(bare, feats, rtol=1e-3, atol=tol)
    assert (unscaled - feats).abs().max() > 100 * tol          # the [0, 1] image would not do
    assert feats.std(0).mean() > 1e-3 * feats.abs().mean()    # images told apart


def test_fid_through_the_network_is_zero_for_a_set_with_itself(tf_net):
    # eval mode throughout (batch-norm running statistics, no dropout): the same images
    # give the same features whatever the batching, so FID(set, set) = 0; other images
    # do not. FID on 128 of the 2048 features: a 2048x2048 sqrtm takes ~12 s on this CPU
    torch.manual_seed(4)
    net = tf_net
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    y = torch.rand(3, 1, 28, 28) * 2 - 1
    one, two, other = embed(net, x, batch_size=3), embed(net, x, batch_size=1), embed(net, y)
    assert one.shape == (3, 2048)
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-6)
    k = slice(0, 128)
    assert fid(one[:, k], two[:, k]) == pytest.approx(0.0, abs=1e-6 * fid(one[:, k], other[:, k]))
    assert fid(one[:, k], other[:, k]) > 0
