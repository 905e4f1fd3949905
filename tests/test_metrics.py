"""Image metrics, Fréchet distance / FID / KID, the feature cache, the Inception resize, ST-LPIPS."""
from __future__ import annotations

import math

import pytest
import torch

from srpkd.data.images import to_255, to_uint8
from srpkd.errors import SrpkdError
from srpkd.metrics import fid as F
from srpkd.metrics.image import l1, psnr, ssim
from srpkd.metrics.inception import InceptionFeatures, resize_tf1_bilinear
from srpkd.metrics.perceptual import STLPIPS, perceptual_distance
from srpkd.metrics.shared import per_device


def gray(level: int, n: int = 2, size: int = 16) -> torch.Tensor:
    """A batch of constant images with 8-bit value ``level``, in [-1, 1]."""
    return torch.full((n, 3, size, size), level / 127.5 - 1.0)


# ----------------------------------------------------------------------------- PSNR / SSIM / L1


def test_psnr_known_value_and_cap():
    assert psnr(gray(100), gray(110)) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-4)
    assert psnr(gray(100), gray(100)) == 100.0
    per = psnr(torch.cat([gray(0, 1), gray(0, 1)]), torch.cat([gray(10, 1), gray(20, 1)]), reduction="none")
    assert per.shape == (2,) and per[0] > per[1]


def test_psnr_quantises_like_saved_images():
    a = gray(100)
    b = a + 0.1 / 127.5  # a tenth of a gray level: rounds back to the same 8-bit value
    assert psnr(a, b) == 100.0
    assert psnr(a, b, quantize=False) < 100.0


def test_metric_pixels_equal_saved_pixels():
    # the 8-bit values PSNR/SSIM/Inception see are exactly those of a saved PNG
    x = torch.rand(3, 5, 7) * 2.4 - 1.2  # also outside [-1, 1]: clamped
    assert torch.equal(to_255(x).to(torch.uint8).permute(1, 2, 0), torch.from_numpy(to_uint8(x)))
    assert to_255(x).min() >= 0 and to_255(x).max() <= 255 and torch.equal(to_255(x), to_255(x).round())
    assert not torch.equal(to_255(x, quantize=False), to_255(x))


def test_metric_networks_are_shared_per_device():
    built = []

    class Net(torch.nn.Linear):
        def __init__(self):
            super().__init__(2, 2)
            built.append(self)

    get = per_device(Net)
    assert get("cpu") is get(torch.device("cpu")) is get()
    assert len(built) == 1 and get.instances == {torch.device("cpu"): built[0]}


def test_building_a_metric_network_leaves_the_callers_random_draws_alone():
    """A run's draws must not depend on whether the process had already built ST-LPIPS / Inception."""
    get = per_device(lambda: torch.nn.Conv2d(3, 8, 3))  # random initialisation: draws from the generator
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    get("cpu")  # first call: builds
    assert torch.equal(torch.rand(4), expected)


def test_ssim_and_l1():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 24, 24) * 2 - 1
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert ssim(a, noisy) < 0.99
    assert ssim(a[..., :7, :7], noisy[..., :7, :7]) < 1.0  # window shrinks for tiny images
    assert l1(a, a) == 0.0
    assert l1(gray(0), gray(255)) == pytest.approx(2.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


# ----------------------------------------------------------------------------- FID / KID


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    got = F.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 16, generator=g)
    b = torch.randn(30, 16, generator=g) * 1.5 + 0.3
    assert F.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    assert F.fid_from_features(a, b) == pytest.approx(F.fid_from_features(b, a), rel=1e-6)
    assert F.fid_from_features(a, b) > 1.0


def test_fid_needs_two_images():
    with pytest.raises(SrpkdError):
        F.fid_from_features(torch.randn(1, 4), torch.randn(5, 4))


def test_kid_identical_and_same_distribution_near_zero_shifted_positive():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 8, generator=g)
    b = torch.randn(300, 8, generator=g)
    shifted = torch.randn(300, 8, generator=g) + 1.0
    kid_same, _, m = F.kid_from_features(a, a)
    assert m == 300
    kid_indep, _, _ = F.kid_from_features(a, b)
    kid_far, _, _ = F.kid_from_features(a, shifted)
    assert abs(kid_same) < 0.02 * kid_far and abs(kid_indep) < 0.05 * kid_far
    assert kid_far > 0


def test_kid_small_sets_use_all_images_and_are_reproducible():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 8, generator=g), torch.randn(20, 8, generator=g)
    mean, std, m = F.kid_from_features(a, b)
    assert m == 16 and std >= 0
    assert F.kid_from_features(a, b) == (mean, std, m)  # fixed seed


# ----------------------------------------------------------------------------- cache


def test_content_key_depends_on_bytes_extractor_and_preprocessing(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"one")
    k1 = F.content_key([f], "ext-a", "resize:64")
    assert k1 == F.content_key([f], "ext-a", "resize:64")
    assert k1 != F.content_key([f], "ext-b", "resize:64")
    assert k1 != F.content_key([f], "ext-a", "resize:32")
    f.write_bytes(b"two")
    assert k1 != F.content_key([f], "ext-a", "resize:64")


def test_feature_cache_roundtrip_and_damaged_entry(tmp_path):
    cache = F.FeatureCache(tmp_path)
    calls = []
    feats = torch.randn(5, 3)

    def compute():
        calls.append(1)
        return feats

    got, hit = cache.features("k", compute)
    assert not hit and torch.equal(got, feats)
    got, hit = cache.features("k", compute)
    assert hit and torch.equal(got, feats) and len(calls) == 1
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file
    cache.path("k").write_bytes(b"garbage")
    got, hit = cache.features("k", compute)
    assert not hit and len(calls) == 2


def test_cache_entry_of_named_tensors_checks_every_shape(tmp_path, caplog):
    cache = F.FeatureCache(tmp_path)
    outs, feats = torch.rand(3, 3, 8, 8), torch.randn(3, 5)
    cache.put_tensors("t", {"outputs": outs, "features": feats})
    got = cache.get_tensors("t", {"outputs": (3, None, None, None), "features": (3, None)})
    assert torch.equal(got["outputs"], outs) and torch.equal(got["features"], feats)
    assert cache.get_tensors("t", {"outputs": (4, None, None, None), "features": (4, None)}) is None  # other set
    assert cache.get_tensors("t", {"outputs": (3, None, None), "missing": (3,)}) is None
    assert "damaged feature cache entry" in caplog.text
    assert F.FeatureCache(tmp_path, enabled=False).get_tensors("t", {"features": (3, None)}) is None


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SRPKD_CACHE", str(tmp_path))
    assert F.cache_dir() == tmp_path


# ----------------------------------------------------------------------------- Inception preprocessing


def test_tf1_bilinear_resize_convention():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    y = resize_tf1_bilinear(x, (2, 8))
    # TF1 (no half-pixel centres): output i samples input i * 4 / 8, clamped at the border
    assert torch.allclose(y[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.0]))
    assert torch.equal(resize_tf1_bilinear(x, (2, 4)), x)


@pytest.fixture(scope="module")
def inception():
    try:
        return InceptionFeatures()
    except SrpkdError as e:
        pytest.skip(str(e))


def test_real_inception_smoke(inception):
    torch.manual_seed(0)
    imgs = (torch.rand(3, 3, 24, 24) * 255).round()
    feats = inception(imgs)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()
    assert F.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert inception.extractor_id.startswith("tf-inception-2015-12-05:")


# ----------------------------------------------------------------------------- ST-LPIPS


@pytest.fixture(scope="module")
def lpips():
    try:
        return STLPIPS()
    except SrpkdError as e:
        pytest.skip(str(e))


def test_stlpips_properties(lpips):
    torch.manual_seed(0)
    a = torch.rand(2, 3, 48, 48) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    c = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(lpips(a, a), torch.zeros(2))
        d_ab, d_ba, d_ac = lpips(a, b), lpips(b, a), lpips(a, c)
    assert torch.allclose(d_ab, d_ba, atol=1e-6)
    assert (d_ab > 0).all() and (d_ac > d_ab).all()
    # shift tolerance: a one-pixel shift is closer than added noise of similar energy
    with torch.no_grad():
        d_shift = lpips(a, torch.roll(a, 1, dims=3))
    assert d_shift.shape == (2,)


def test_perceptual_distance_is_the_mean_over_chunks(lpips):
    torch.manual_seed(1)
    a, b = torch.rand(5, 3, 40, 40) * 2 - 1, torch.rand(5, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        want = lpips(a, b).mean().item()
    for chunk in (1, 2, 5, 8):
        assert perceptual_distance(a, b, lpips, chunk=chunk) == pytest.approx(want, rel=1e-5)


def test_stlpips_weights_are_all_loaded(lpips):
    # every conv of the trunk and every linear head came from the file (none left at init values)
    assert all(float(m.weight.abs().sum()) > 0 for m in lpips.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(float(lin.model[0].weight.min()) >= 0 for lin in lpips.lins)
