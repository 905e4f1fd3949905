"""Losses: each one against a dense or hand-computed reference, plus its gradients."""
from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from srpkd.errors import SrpkdError
from srpkd.losses import (
    FeatureAdapter,
    GANLoss,
    ImagePool,
    attention_transfer_loss,
    feature_kd_loss,
    feature_kd_loss_factorized,
    output_kd_loss,
    semantic_relation_loss,
    similarity_preserving_loss,
)
import srpkd.losses as L
from srpkd.losses import relation
from srpkd.metrics.perceptual import stlpips

TOL = {torch.float64: 1e-5, torch.float32: 1e-3}


def feats(b, c, h, w, seed, dtype=torch.float64, relu=False, dead=()):
    """Random features; ``relu`` clips them, ``dead`` lists flat pixel indices zeroed in every channel."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    if relu:
        f = f.relu()
    f = f.flatten(2)
    f[..., list(dead)] = 0
    return f.view(b, c, h, w)


def value_and_grads(ft, fs, method, **kw):
    ft, fs = ft.detach().requires_grad_(), fs.detach().requires_grad_()
    loss = semantic_relation_loss(ft, fs, method, **kw)
    return (loss, *torch.autograd.grad(loss, (ft, fs)))


def assert_close(a, b, rtol, atol=0.0):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- semantic relation loss


def dense_by_definition(ft, fs, eps=1e-8):
    """Straight from the definition, one image at a time, float64."""
    losses = []
    for t, s in zip(ft.double(), fs.double()):
        rel = []
        for f in (t, s):
            q = f.flatten(1).T  # (HW, C)
            a = q @ q.T
            rel.append(a / (a.square().sum(1, keepdim=True) + eps).sqrt())
        losses.append((rel[0] - rel[1]).square().sum() / q.shape[0] ** 2)
    return torch.stack(losses).mean()


def test_dense_method_matches_the_definition():
    ft, fs = feats(3, 5, 4, 3, 0), feats(3, 2, 4, 3, 1, relu=True, dead=[2, 7])
    assert_close(semantic_relation_loss(ft, fs, "dense"), dense_by_definition(ft, fs), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("relu", [False, True], ids=["random", "relu_dead_pixels"])
def test_factorized_matches_dense_values_and_gradients(dtype, relu):
    dead_t, dead_s = ([0, 5, 11], [5, 9]) if relu else ((), ())
    ft = feats(2, 16, 4, 5, 2, dtype, relu, dead_t)
    fs = feats(2, 6, 4, 5, 3, dtype, relu, dead_s)
    dense = value_and_grads(ft, fs, "dense")
    fact = value_and_grads(ft, fs, "factorized")
    for d, f in zip(dense, fact):
        assert d.dtype == f.dtype == dtype
        assert_close(f, d, rtol=TOL[dtype], atol=TOL[dtype] * d.abs().max().item())
    assert all(torch.isfinite(g).all() for g in fact[1:])


@pytest.mark.parametrize("chunk_elements", [1, 7, 40])
def test_chunking_over_pixels_is_exact(chunk_elements):
    ft, fs = feats(2, 4, 5, 3, 4, relu=True, dead=[1]), feats(2, 3, 5, 3, 5)
    reference = value_and_grads(ft, fs, "dense")
    with mock.patch.object(relation, "CHUNK_ELEMENTS", chunk_elements):
        chunked = value_and_grads(ft, fs, "factorized")
    for d, c in zip(reference, chunked):
        assert_close(c, d, rtol=1e-10, atol=1e-14)


def test_gradcheck_factorized():
    ft = feats(2, 3, 2, 3, 6).requires_grad_()
    fs = feats(2, 2, 2, 3, 7).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, s: semantic_relation_loss(t, s), (ft, fs))
    # dead pixels with an eps large enough for finite differences to resolve the kink
    ft = feats(1, 3, 2, 2, 8, relu=True, dead=[1]).requires_grad_()
    fs = feats(1, 2, 2, 2, 9, dead=[3]).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, s: semantic_relation_loss(t, s, eps=0.1), (ft, fs))


def test_teacher_without_grad_gives_student_gradient_only():
    ft = feats(1, 8, 3, 3, 10, torch.float32)
    fs = feats(1, 4, 3, 3, 11, torch.float32).requires_grad_()
    semantic_relation_loss(ft, fs).backward()
    assert ft.grad is None and fs.grad is not None and fs.grad.abs().sum() > 0


@pytest.mark.parametrize("method", relation.METHODS)
def test_invariances_give_zero_and_different_features_give_positive(method):
    ft = feats(2, 6, 4, 4, 12, relu=True, dead=[3])
    rotation = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    same = [
        ft,
        3.7 * ft,
        0.25 * ft,
        torch.einsum("dc,bchw->bdhw", rotation, ft),  # A = Q Q^T ignores an orthogonal change of channel basis
    ]
    for fs in same:
        assert semantic_relation_loss(ft, fs, method).abs() < 1e-12
    other = feats(2, 3, 4, 4, 13)
    assert semantic_relation_loss(ft, other, method) > 1e-3


def test_batch_loss_is_the_mean_of_per_image_losses():
    ft, fs = feats(4, 5, 3, 3, 14), feats(4, 2, 3, 3, 15)
    singles = [semantic_relation_loss(ft[i : i + 1], fs[i : i + 1]) for i in range(4)]
    assert_close(semantic_relation_loss(ft, fs), torch.stack(singles).mean(), rtol=1e-12)


def test_precise_near_convergence_in_float32():
    # the student is 1e-4 away from the teacher: the loss is ~1e-9 and 2HW - 2 cross cancels
    # about 8 of float32's 7 digits; computing in float64 inside keeps it
    ft = feats(1, 32, 8, 8, 16, torch.float32, relu=True)
    fs = ft + 1e-4 * feats(1, 32, 8, 8, 17, torch.float32)
    exact = dense_by_definition(ft, fs)
    assert 0 < exact < 1e-6
    for method in relation.METHODS:
        loss = semantic_relation_loss(ft, fs, method)
        assert loss.dtype == torch.float32
        assert_close(loss.double(), exact, rtol=1e-5)


@pytest.mark.parametrize("method", relation.METHODS)
def test_float32_precision_agrees_with_float64_away_from_convergence(method):
    """precision float32 (3x faster on a CPU): values to 1e-5 and gradients to 1e-4 at training-time distances."""
    ft = feats(2, 48, 16, 16, 20, torch.float32, relu=True)
    for scale in (1.0, 0.01):  # a random student, and one 1% away from the teacher's first channels
        fs = (ft[:, :16] + scale * feats(2, 16, 16, 16, 21, torch.float32)).contiguous()
        ref = value_and_grads(ft, fs, method)
        f32 = value_and_grads(ft, fs, method, precision="float32")
        assert_close(f32[0], ref[0], rtol=1e-5)
        for r, g in zip(ref[1:], f32[1:]):
            assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())
    # the documented limit: 1e-4 away (loss ~1e-11) the factorized form's n_t + n_s - 2c cancels float32's
    # digits away (float64 keeps them); the dense form subtracts the relation matrices and stays exact
    fs = ft + 1e-4 * feats(2, 48, 16, 16, 22, torch.float32)
    loss = semantic_relation_loss(ft, fs, method, precision="float32")
    error = abs(float(loss) / float(dense_by_definition(ft, fs)) - 1)
    assert error > 1e-3 if method == "factorized" else error < 1e-4
    with pytest.raises(SrpkdError, match="precision"):
        semantic_relation_loss(ft, fs, method, precision="float16")


def test_bfloat16_autocast():
    conv_t, conv_s = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(18))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ft, fs = conv_t(x).relu(), conv_s(x).relu()
        assert fs.dtype == torch.bfloat16
        loss = semantic_relation_loss(ft.detach(), fs)
    assert loss.dtype == torch.float32
    assert_close(loss.double(), dense_by_definition(ft, fs), rtol=1e-6)
    loss.backward()
    assert torch.isfinite(conv_s.weight.grad).all() and conv_s.weight.grad.abs().sum() > 0


def test_shape_mismatch_is_one_line_naming_both_shapes():
    with pytest.raises(SrpkdError) as e:
        semantic_relation_loss(torch.zeros(2, 8, 4, 4), torch.zeros(2, 4, 4, 5))
    msg = str(e.value)
    assert "(2, 8, 4, 4)" in msg and "(2, 4, 4, 5)" in msg and "\n" not in msg
    for t, s in [((2, 8, 4, 4), (1, 8, 4, 4)), ((8, 4, 4), (8, 4, 4))]:
        with pytest.raises(SrpkdError):
            semantic_relation_loss(torch.zeros(t), torch.zeros(s))
    with pytest.raises(SrpkdError, match="method"):
        semantic_relation_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), method="sparse")


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    ct=st.integers(1, 6),
    cs=st.integers(1, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    relu=st.booleans(),
    chunk_elements=st.sampled_from([1, 5, relation.CHUNK_ELEMENTS]),
    seed=st.integers(0, 2**16),
)
def test_property_dense_equals_factorized(b, ct, cs, h, w, relu, chunk_elements, seed):
    ft, fs = feats(b, ct, h, w, seed, relu=relu), feats(b, cs, h, w, seed + 1, relu=relu)
    dense = value_and_grads(ft, fs, "dense")
    with mock.patch.object(relation, "CHUNK_ELEMENTS", chunk_elements):
        fact = value_and_grads(ft, fs, "factorized")
    for d, f in zip(dense, fact):
        assert_close(f, d, rtol=1e-7, atol=1e-9 * max(1.0, d.abs().max().item()))


# --------------------------------------------------------------------------- KD losses


def test_output_kd_loss_is_mean_absolute_difference():
    s = torch.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [2.0, -0.5]])
    loss = output_kd_loss(s, t)
    assert loss.item() == pytest.approx((0.5 + 2.0 + 0.0 + 0.5) / 4)
    loss.backward()
    assert torch.equal(s.grad, torch.tensor([[1.0, -1.0], [0.0, 1.0]]) / 4)
    with pytest.raises(SrpkdError, match=r"\(2, 2\).*\(1, 2\)"):
        output_kd_loss(s, t[:1])


def test_feature_adapter_is_a_learned_1x1_conv_and_feature_kd_is_mse():
    torch.manual_seed(0)
    adapter = FeatureAdapter(4, 8)
    assert sum(p.numel() for p in adapter.parameters()) == 4 * 8 + 8
    fs, ft = torch.randn(2, 4, 3, 5), torch.randn(2, 8, 3, 5)
    out = adapter(fs)
    expected = torch.einsum("oc,bchw->bohw", adapter.weight[:, :, 0, 0], fs) + adapter.bias[:, None, None]
    assert_close(out, expected, rtol=1e-5, atol=1e-6)
    loss = feature_kd_loss(out, ft)
    assert_close(loss, ((expected - ft) ** 2).mean(), rtol=1e-5)
    loss.backward()
    assert adapter.weight.grad.abs().sum() > 0 and adapter.bias.grad.abs().sum() > 0
    with pytest.raises(SrpkdError, match="adapted student"):
        feature_kd_loss(fs, ft)


def _adapter_value_and_grads(fn, fs, ft, adapter):
    fs = fs.detach().requires_grad_()
    adapter.zero_grad()
    loss = fn(fs, ft, adapter)
    loss.backward()
    return loss.detach(), fs.grad, adapter.weight.grad.clone(), adapter.bias.grad.clone()


def _direct(fs, ft, adapter):
    return feature_kd_loss(adapter(fs), ft)


def _factorized(fs, ft, adapter):
    return feature_kd_loss_factorized(fs, ft, adapter.weight, adapter.bias)


@pytest.mark.parametrize("shape", [(2, 3, 8, 4, 5), (3, 16, 64, 8, 8), (1, 5, 2, 1, 7)])
def test_factorized_feature_kd_equals_the_direct_form_in_value_and_gradients(shape):
    b, c_s, c_t, h, w = shape
    torch.manual_seed(0)
    adapter = FeatureAdapter(c_s, c_t).double()
    fs, ft = feats(b, c_s, h, w, 30, relu=True), feats(b, c_t, h, w, 31)
    want = _adapter_value_and_grads(_direct, fs, ft, adapter)
    got = _adapter_value_and_grads(_factorized, fs, ft, adapter)
    for g, e in zip(got, want):  # float64: rounding only
        assert_close(g, e, rtol=1e-10, atol=1e-12)
    # without a bias it is the bias-free adapter's loss
    no_bias = feature_kd_loss_factorized(fs, ft, adapter.weight)
    assert_close(no_bias, ((adapter(fs) - adapter.bias[:, None, None] - ft) ** 2).mean(), rtol=1e-10)


def test_factorized_feature_kd_in_float32_and_near_convergence():
    """The documented float32 tolerance: 1e-6 relative at a typical loss, 1e-5 at 1e-2 of the teacher's mean square."""
    torch.manual_seed(1)
    adapter = FeatureAdapter(16, 64)
    fs = feats(4, 16, 32, 32, 32, torch.float32, relu=True)
    for noise, level, rtol in ((1.0, (0.5, 1.0), 1e-5), (0.04, (3e-3, 3e-2), 2e-4)):
        with torch.no_grad():
            ft = adapter(fs) + noise * feats(4, 64, 32, 32, 33, torch.float32)
        ad64 = FeatureAdapter(16, 64).double()
        ad64.load_state_dict({k: v.double() for k, v in adapter.state_dict().items()})
        ref = _adapter_value_and_grads(_direct, fs.double(), ft.double(), ad64)
        got = _adapter_value_and_grads(_factorized, fs, ft, adapter)
        assert level[0] < (ref[0] / ft.double().square().mean()).item() < level[1]  # loss / teacher's mean square
        assert_close(got[0].double(), ref[0], rtol=rtol)
        for g, e in zip(got[1:], ref[1:]):
            assert_close(g.double(), e, rtol=rtol, atol=rtol * e.abs().max().item())


def test_factorized_feature_kd_under_bf16_autocast_computes_in_float32():
    torch.manual_seed(2)
    adapter = FeatureAdapter(4, 8)
    fs = torch.randn(2, 4, 6, 6).bfloat16()
    ft = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = feature_kd_loss_factorized(fs, ft, adapter.weight, adapter.bias)
    assert loss.dtype == torch.float32
    assert_close(loss, feature_kd_loss(adapter(fs.float()), ft), rtol=1e-5)


@pytest.mark.parametrize("bad", ["student_channels", "teacher_channels", "spatial", "batch", "kernel"])
def test_factorized_feature_kd_names_mismatched_shapes(bad):
    fs, ft, w = torch.zeros(2, 4, 5, 5), torch.zeros(2, 8, 5, 5), torch.zeros(8, 4, 1, 1)
    fs = {"student_channels": torch.zeros(2, 3, 5, 5), "spatial": torch.zeros(2, 4, 5, 6),
          "batch": torch.zeros(1, 4, 5, 5)}.get(bad, fs)
    ft = torch.zeros(2, 7, 5, 5) if bad == "teacher_channels" else ft
    w = torch.zeros(8, 4, 3, 3) if bad == "kernel" else w
    with pytest.raises(SrpkdError, match="do not match"):
        feature_kd_loss_factorized(fs, ft, w)


def test_similarity_preserving_matches_loops():
    ft = feats(3, 4, 2, 2, 20).requires_grad_()
    fs = feats(3, 2, 3, 1, 21).requires_grad_()  # other channels and spatial size: only the batch must match

    def gram(f):
        b = f.shape[0]
        g = [[float((f[i].flatten() * f[j].flatten()).sum()) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in g]

    gt, gs = gram(ft.detach()), gram(fs.detach())
    expected = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    loss = similarity_preserving_loss(ft, fs)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert ft.grad.abs().sum() > 0 and fs.grad.abs().sum() > 0
    assert similarity_preserving_loss(ft, 2.5 * ft).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(SrpkdError, match="batch"):
        similarity_preserving_loss(ft, fs[:2])


def test_attention_transfer_hand_computed():
    # one image, 1 x 2 pixels; teacher channels (1, 0) and (1, 2): mean of squares = (1, 2) -> (1, 2)/sqrt 5
    ft = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])
    fs = torch.tensor([[[[3.0, 1.0]]]], requires_grad=True)  # one channel: attention (9, 1) -> (9, 1)/sqrt 82
    a, c = 1 / math.sqrt(5), 1 / math.sqrt(82)
    expected = ((9 * c - a) ** 2 + (c - 2 * a) ** 2) / 2
    loss = attention_transfer_loss(ft, fs)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert fs.grad.abs().sum() > 0
    # p = 1: mean |f| over channels, (1, 1) -> (1, 1)/sqrt 2 for the teacher, (3, 1)/sqrt 10 for the student
    b, d = 1 / math.sqrt(2), 1 / math.sqrt(10)
    assert attention_transfer_loss(ft, fs, p=1).item() == pytest.approx(((3 * d - b) ** 2 + (d - b) ** 2) / 2, rel=1e-6)
    assert attention_transfer_loss(ft, -7 * ft).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(SrpkdError, match=r"\(1, 2, 1, 2\).*\(1, 1, 2, 1\)"):
        attention_transfer_loss(ft, fs.view(1, 1, 2, 1))
    with pytest.raises(SrpkdError, match="positive"):
        attention_transfer_loss(ft, fs, p=0)


def test_kd_losses_upcast_under_autocast():
    x = torch.randn(2, 4, 3, 3).bfloat16().float().bfloat16()
    y = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [
            output_kd_loss(x, y),
            feature_kd_loss(x, y),
            similarity_preserving_loss(y, x),
            attention_transfer_loss(y, x),
        ]
    expected = [
        (x.float() - y).abs().mean(),
        ((x.float() - y) ** 2).mean(),
        similarity_preserving_loss(y, x.float()),
        attention_transfer_loss(y, x.float()),
    ]
    for v, e in zip(values, expected):
        assert v.dtype == torch.float32
        assert_close(v, e, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- GAN losses


@pytest.mark.parametrize(
    "mode, real, fake, generator",
    [
        ("lsgan", (0.25 + 1.0) / 2, (0.25 + 4.0) / 2, (0.25 + 1.0) / 2),
        (
            "vanilla",
            (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-2.0))) / 2,
            (math.log1p(math.exp(0.5)) + math.log1p(math.exp(2.0))) / 2,
            (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-2.0))) / 2,
        ),
        ("hinge", (0.5 + 0.0) / 2, (1.5 + 3.0) / 2, -(0.5 + 2.0) / 2),
    ],
)
def test_gan_loss_values(mode, real, fake, generator):
    pred = torch.tensor([0.5, 2.0], requires_grad=True)
    loss = GANLoss(mode)
    assert loss(pred, True).item() == pytest.approx(real)
    assert loss(pred, False).item() == pytest.approx(fake)
    g = loss(pred, True, for_discriminator=False)
    assert g.item() == pytest.approx(generator)
    g.backward()
    assert pred.grad.abs().sum() > 0


def test_gan_loss_default_list_and_errors():
    loss = GANLoss()
    assert loss.mode == "lsgan"
    a, b = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)
    assert_close(loss([a, b], True), (loss(a, True) + loss(b, True)) / 2, rtol=1e-6)
    assert loss(a.bfloat16(), False).dtype == torch.float32
    with pytest.raises(SrpkdError, match="wgan"):
        GANLoss("wgan")
    with pytest.raises(ValueError):
        GANLoss("hinge")(a, False, for_discriminator=False)
    with pytest.raises(ValueError):
        loss([], True)


# --------------------------------------------------------------------------- image pool


def batches(n, seed, b=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 4, 4, generator=g) for _ in range(n)]


def test_pool_size_zero_is_passthrough():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert ImagePool(0).query(x) is x


def test_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(4)
    first, second = batches(2, 0)
    rng = torch.get_rng_state()
    assert torch.equal(pool(first), first) and torch.equal(pool(second), second)
    assert torch.equal(torch.get_rng_state(), rng)  # no draws while filling
    assert len(pool) == 4

    torch.manual_seed(1)
    swapped = 0
    for x in batches(200, 2):
        before = [t.clone() for t in pool.images]
        out = pool(x)
        assert not out.requires_grad and len(pool) == 4
        # the pool plus what was returned is the old pool plus the new batch
        keys = lambda ts: sorted(t.sum().item() for t in ts)  # noqa: E731
        assert keys(list(out) + pool.images) == keys(before + list(x))
        swapped += sum(not torch.equal(o, i) for o, i in zip(out, x))
    assert 0.4 < swapped / 400 < 0.6


def test_pool_state_round_trip_resumes_exactly():
    data = batches(12, 3)
    torch.manual_seed(4)
    pool = ImagePool(5)
    for x in data[:6]:
        pool(x)
    state, rng = pool.state_dict(), torch.get_rng_state()
    assert state["count"] == 5 and state["images"].shape == (5, 3, 4, 4)
    expected = [pool(x) for x in data[6:]]

    for images in (state["images"], list(state["images"])):  # a stacked tensor or a list of tensors
        resumed = ImagePool(5)
        resumed.load_state_dict(state | {"images": images})
        torch.set_rng_state(rng)
        for x, e in zip(data[6:], expected):
            assert torch.equal(resumed(x), e)
    empty = ImagePool(5)
    empty.load_state_dict(ImagePool(5).state_dict())
    assert len(empty) == 0

    # a private generator travels with the state
    pool = ImagePool(3, generator=torch.Generator().manual_seed(5))
    for x in data[:4]:
        pool(x)
    state = pool.state_dict()
    expected = [pool(x) for x in data[4:]]
    resumed = ImagePool(3, generator=torch.Generator())
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed(x), e) for x, e in zip(data[4:], expected))


def test_pool_errors():
    pool = ImagePool(2)
    pool(torch.zeros(1, 3, 4, 4))
    with pytest.raises(SrpkdError, match="shape"):
        pool(torch.zeros(1, 3, 8, 8))
    with pytest.raises(SrpkdError, match="size 1 "):
        ImagePool(1).load_state_dict(ImagePool(3).state_dict() | {"images": torch.zeros(2, 3, 4, 4), "count": 2})
    with pytest.raises(SrpkdError):
        ImagePool(-1)


# --------------------------------------------------------------------------- benchmark script


def test_relation_benchmark_script_smoke(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "relation_loss.py"
    spec = importlib.util.spec_from_file_location("relation_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--json", "--hw", "16", "64", "--c-t", "8", "--c-s", "4", "--repeats", "1",
                       "--dense-repeats", "1", "--dense-budget-gib", "1e-4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["hw"] for r in rows] == [16, 64]
    keys = {"hw", "c_t", "c_s", "dense_ms", "factorized_ms", "dense_peak_mb", "factorized_peak_mb", "max_rel_err"}
    assert keys <= rows[0].keys() and keys <= rows[1].keys()
    assert rows[0]["max_rel_err"] < 1e-12 and rows[0]["dense_peak_mb"] > 0
    assert rows[1]["dense_ms"] is None and rows[1]["max_rel_err"] is None  # 6 * 64^2 * 8 B > 1e-4 GiB
    assert rows[1]["dense_note"].startswith("skipped: needs")


def test_random_square_takes_the_same_square_of_both_batches():
    a = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).reshape(2, 3, 8, 10)
    b = -a
    torch.manual_seed(3)
    sa, sb = L.random_square(a, b, 4)
    assert sa.shape == (2, 3, 4, 4) and torch.equal(sb, -sa)
    top, left = divmod(int(sa[0, 0, 0, 0]), 10)  # where the square starts in a
    assert torch.equal(sa, a[..., top:top + 4, left:left + 4])
    seen = set()
    for _ in range(200):
        s, _ = L.random_square(a, b, 4)
        seen.add(divmod(int(s[0, 0, 0, 0]), 10))
    assert seen == {(top, left) for top in range(5) for left in range(7)}  # every position, nothing outside
    assert L.random_square(a, b, 0)[0] is a and L.random_square(a, b, 10)[0] is a  # whole images


def test_colour_kd_loss_is_l1_between_block_means_in_float32():
    """Dense reference: the mean colour of every pool x pool block by explicit loops; pool 0 is the per-channel
    means; bf16 inputs under autocast compute in float32."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 8, 12), torch.randn(2, 3, 8, 12)
    want = torch.zeros(())
    for n, c, i, j in itertools.product(range(2), range(3), range(2), range(3)):
        block = (s - t)[n, c, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
        want += block.mean().abs()
    assert torch.allclose(L.colour_kd_loss(s, t, pool=4), want / (2 * 3 * 2 * 3), atol=1e-6)
    assert torch.allclose(L.colour_kd_loss(s, t, pool=0), (s - t).mean((2, 3)).abs().mean(), atol=1e-6)
    assert torch.allclose(L.colour_kd_loss(s, t, pool=1), L.output_kd_loss(s, t))  # 1 px blocks: output KD
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = L.colour_kd_loss(s.bfloat16(), t.bfloat16(), pool=4)
    assert low.dtype == torch.float32
    assert torch.allclose(low, L.colour_kd_loss(s.bfloat16().float(), t.bfloat16().float(), pool=4), atol=1e-6)
    with pytest.raises(SrpkdError, match="colour_kd_loss"):
        L.colour_kd_loss(s, t[:1])
    with pytest.raises(SrpkdError, match="pool must be 0"):
        L.colour_kd_loss(s, t, pool=-1)


def test_colour_kd_loss_counts_a_cast_in_full_and_texture_hardly():
    """What the term is for: a uniform cast of 0.2 costs 0.2, as in output KD; fine zero-mean texture that
    output KD charges 0.2 for costs nothing."""
    t = torch.rand(2, 3, 64, 64) * 2 - 1
    cast = t + 0.2
    grain = t + 0.2 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32)  # a checkerboard, mean 0 per block
    assert float(L.colour_kd_loss(cast, t)) == pytest.approx(0.2, abs=1e-5)
    assert float(L.output_kd_loss(grain, t)) == pytest.approx(0.2, abs=1e-5)
    assert float(L.colour_kd_loss(grain, t)) < 1e-6
    assert float(L.colour_kd_loss(t, t, pool=0)) == 0.0


def test_perceptual_kd_loss_is_the_mean_metric_of_the_square_in_float32():
    """With a hand-written metric (mean squared difference per image) the loss is that metric's mean over the
    batch on the drawn square, computed in float32 also under bf16 autocast, with gradients to the student only."""
    def metric(x, y):
        assert x.dtype == y.dtype == torch.float32 and x.shape[-2:] == (4, 4)
        return (x - y).square().flatten(1).mean(1)

    s = torch.randn(3, 3, 8, 8, requires_grad=True)
    t = torch.randn(3, 3, 8, 8)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = L.perceptual_kd_loss(s.bfloat16(), t.bfloat16(), metric, crop=4)
    torch.manual_seed(0)
    ss, tt = L.random_square(s.bfloat16().float(), t.bfloat16().float(), 4)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, (ss - tt).square().mean(), atol=1e-6)
    loss.backward()
    assert s.grad is not None and int((s.grad != 0).flatten(2).any(1).sum()) == 3 * 16  # only the square
    with pytest.raises(SrpkdError, match="perceptual_kd_loss"):
        L.perceptual_kd_loss(s, t[:2], metric)


def test_perceptual_kd_loss_with_st_lpips_is_zero_for_the_teacher_and_grows_with_noise():
    metric = stlpips(torch.device("cpu"))
    t = torch.rand(2, 3, 64, 64) * 2 - 1
    near = (t + 0.05 * torch.randn_like(t)).clamp(-1, 1)
    far = (t + 0.3 * torch.randn_like(t)).clamp(-1, 1)
    assert float(L.perceptual_kd_loss(t, t, metric, crop=32)) == 0.0
    assert 0 < float(L.perceptual_kd_loss(near, t, metric, crop=0)) < float(L.perceptual_kd_loss(far, t, metric, 0))
