"""Tests for pipeline.kernels.weights (PSF Signal Weight, PSF SNR, SNR/noise/WBPP weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.kernels.noise import mrs_noise
from pipeline.kernels.psf import fit_psf
from pipeline.kernels.weights import (
    PSFSNR_CONSTANT,
    PSFSW_CONSTANT,
    WBPP_DEFAULT_ECCENTRICITY_WEIGHT,
    WBPP_DEFAULT_FWHM_WEIGHT,
    WBPP_DEFAULT_PEDESTAL,
    WBPP_DEFAULT_SNR_WEIGHT,
    average_deviation,
    background_residual_estimates,
    noise_weight,
    psf_signal_weight,
    psf_snr,
    snr_weight,
    star_count_weight,
    wbpp_formula_weight,
)

SHAPE = (512, 512)
BETA = 3.5
NOISE = 10.0


def _moffat_stars(shape, x, y, flux, *, fwhm, beta=BETA, sub=3):
    """Pixel-integrated round Moffat stars of given total flux."""
    h, w = shape
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    peak = flux * (beta - 1.0) / (math.pi * alpha**2)
    radius = int(math.ceil(5 * fwhm)) + 3
    offsets = np.arange(-radius, radius + 1)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    rows = iy[:, None, None] + offsets[None, :, None]
    cols = ix[:, None, None] + offsets[None, None, :]
    acc = np.zeros((x.size, offsets.size, offsets.size))
    for oy in (np.arange(sub) + 0.5) / sub - 0.5:
        for ox in (np.arange(sub) + 0.5) / sub - 0.5:
            dx = cols + ox - x[:, None, None]
            dy = rows + oy - y[:, None, None]
            acc += (1.0 + (dx * dx + dy * dy) / alpha**2) ** -beta
    stamps = peak[:, None, None] * acc / sub**2
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    image = np.bincount((rows * w + cols)[inside], weights=stamps[inside], minlength=h * w)
    return image.reshape(shape)


def _measure(image, x, y):
    fits = fit_psf(image, x, y)
    good = fits.ok
    sigma = mrs_noise(image)
    m_star, _ = background_residual_estimates(image)
    return {
        "psfsw": psf_signal_weight(
            fits.signal[good], fits.signal_area[good], noise=sigma, m_star=m_star
        ),
        "psfsnr": psf_snr(fits.signal[good], noise=sigma),
        "n_ok": int(good.sum()),
        "fwhm": float(np.median(fits.fwhm[good])),
    }


@pytest.fixture(scope="module")
def subs():
    """Four subs of one field: reference, x3 gain, half transparency, 2.5x blurred."""
    rng = np.random.default_rng(42)
    centres = 70.0 * (np.arange(6) + 1.0)
    gx, gy = np.meshgrid(centres, centres)
    x = gx.ravel() + rng.uniform(-8, 8, gx.size)
    y = gy.ravel() + rng.uniform(-8, 8, gy.size)
    flux = 10.0 ** rng.uniform(4.5, 5.5, x.size)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    sky = 1000.0 + 0.1 * xx + 0.05 * yy

    def sub(fwhm, transparency, seed):
        noise = np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)
        stars = _moffat_stars(SHAPE, x, y, transparency * flux, fwhm=fwhm)
        return sky + stars + noise

    reference = sub(3.0, 1.0, 1)
    frames = {
        "reference": reference.astype(np.float32),
        "gain3": (3.0 * reference).astype(np.float32),
        "half_transparency": sub(3.0, 0.5, 2).astype(np.float32),
        "blurred": sub(7.5, 1.0, 3).astype(np.float32),
    }
    return {name: _measure(frame, x, y) for name, frame in frames.items()} | {"n": x.size}


def test_psf_signal_weight_hand_computed():
    signal = [100.0, 200.0, 300.0]
    area = [10.0, 20.0, 30.0]  # every mean flux is 10
    expected = 5.326e-6 * 600.0 * 30.0 / (9.0e6 * 2.0 * 1.5)
    assert psf_signal_weight(signal, area, noise=2.0, m_star=1.5) == pytest.approx(expected)
    assert PSFSW_CONSTANT == pytest.approx(5.326e-6 / 9.0e6)


def test_psf_snr_hand_computed():
    expected = 1.316e-7 * 600.0**2 / (4.987e6 * 2.0**2)
    assert psf_snr([100.0, 200.0, 300.0, np.nan], noise=2.0) == pytest.approx(expected)
    assert PSFSNR_CONSTANT == pytest.approx(1.316e-7 / 4.987e6)


def test_psf_signal_weight_winsorizes_an_abnormal_mean_flux():
    rng = np.random.default_rng(0)
    signal = np.full(51, 100.0)
    area = rng.uniform(9.0, 11.0, 51)
    area[7] = 0.01  # a fit with an absurdly small FWTM region: mean flux 10000
    normal_means = np.delete(signal / area, 7)
    # the outlier counts as the largest regular mean flux, not as 10000
    expected_m = normal_means.sum() + normal_means.max()
    expected = PSFSW_CONSTANT * signal.sum() * expected_m / (1.0 * 1.0)
    assert psf_signal_weight(signal, area, noise=1.0, m_star=1.0) == pytest.approx(expected)


def test_psf_weights_without_stars_are_zero_and_bad_inputs_raise():
    assert psf_signal_weight([], [], noise=1.0, m_star=1.0) == 0.0
    assert psf_snr([np.nan], noise=1.0) == 0.0
    with pytest.raises(ValueError, match="noise"):
        psf_signal_weight([1.0], [1.0], noise=0.0, m_star=1.0)
    with pytest.raises(ValueError, match="m_star"):
        psf_signal_weight([1.0], [1.0], noise=1.0, m_star=np.nan)
    with pytest.raises(ValueError, match="signal_area"):
        psf_signal_weight([1.0, 2.0], [1.0], noise=1.0, m_star=1.0)
    with pytest.raises(ValueError, match="noise"):
        psf_snr([1.0], noise=-1.0)


def test_subs_are_well_measured(subs):
    for name in ("reference", "gain3", "half_transparency", "blurred"):
        assert subs[name]["n_ok"] == subs["n"], name
    assert subs["reference"]["fwhm"] == pytest.approx(3.0, rel=0.03)
    assert subs["blurred"]["fwhm"] == pytest.approx(7.5, rel=0.03)


def test_psf_weights_are_invariant_to_a_gain_change(subs):
    # the whole sub (signal, background and noise) multiplied by 3
    assert subs["gain3"]["psfsw"] == pytest.approx(subs["reference"]["psfsw"], rel=1e-3)
    assert subs["gain3"]["psfsnr"] == pytest.approx(subs["reference"]["psfsnr"], rel=1e-3)


def test_half_transparency_quarters_psfsw_and_psf_snr(subs):
    # stars at half flux, same noise: F and M halve, so both weights drop ~4x
    ratio_sw = subs["half_transparency"]["psfsw"] / subs["reference"]["psfsw"]
    ratio_snr = subs["half_transparency"]["psfsnr"] / subs["reference"]["psfsnr"]
    assert 0.18 < ratio_sw < 0.32
    assert 0.18 < ratio_snr < 0.32


def test_blurred_sub_gets_a_lower_psfsw_but_the_same_psf_snr(subs):
    # same flux in a 2.5x wider PSF: mean fluxes drop ~6.25x, total flux does not
    ratio_sw = subs["blurred"]["psfsw"] / subs["reference"]["psfsw"]
    assert 0.10 < ratio_sw < 0.22
    ratio_snr = subs["blurred"]["psfsnr"] / subs["reference"]["psfsnr"]
    assert 0.8 < ratio_snr < 1.25


def test_background_residual_estimates_on_noise_with_gradient():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:600, 0:700]
    image = 500.0 + 0.3 * xx - 0.2 * yy + rng.normal(0.0, 8.0, (600, 700))
    m_star, n_star = background_residual_estimates(image)
    # pixels below the background of a Gaussian sky: half-normal residuals
    assert m_star == pytest.approx(0.6745 * 8.0, rel=0.03)
    assert n_star == pytest.approx(8.0, rel=0.03)
    holed = image.copy()
    holed[:50] = np.nan
    assert background_residual_estimates(holed)[0] == pytest.approx(m_star, rel=0.03)
    assert all(math.isnan(v) for v in background_residual_estimates(np.full((9, 9), np.nan)))


def test_background_residual_estimates_validation():
    with pytest.raises(ValueError, match="scale"):
        background_residual_estimates(np.ones((64, 64)), scale=100)
    with pytest.raises(ValueError, match="2-D"):
        background_residual_estimates(np.ones(64))


def test_snr_weight_hand_computed_and_scale_invariant():
    image = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, np.nan]])
    # median 3, mean |x - 3| = 1.2
    assert average_deviation(image) == pytest.approx(1.2)
    assert snr_weight(image, noise=0.5) == pytest.approx((1.2 / 0.5) ** 2)
    rng = np.random.default_rng(1)
    sub = rng.normal(100.0, 10.0, (64, 64))
    assert snr_weight(4.0 * sub, noise=8.0) == pytest.approx(snr_weight(sub, noise=2.0))
    with pytest.raises(ValueError, match="noise"):
        snr_weight(sub, noise=0.0)


def test_noise_weight():
    assert noise_weight(2.0) == pytest.approx(0.25)
    assert noise_weight(2.0, scale=0.5) == pytest.approx(1.0)
    np.testing.assert_allclose(noise_weight([1.0, 2.0, 4.0]), [1.0, 0.25, 0.0625])
    with pytest.raises(ValueError, match="noise"):
        noise_weight([1.0, 0.0])


def test_star_count_weight():
    np.testing.assert_allclose(star_count_weight([10, 20, 40]), [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(star_count_weight([0, 0]), [0.0, 0.0])
    with pytest.raises(ValueError, match="counts"):
        star_count_weight([3, -1])


def test_wbpp_defaults_are_wbpps():
    assert (
        WBPP_DEFAULT_FWHM_WEIGHT,
        WBPP_DEFAULT_ECCENTRICITY_WEIGHT,
        WBPP_DEFAULT_SNR_WEIGHT,
        WBPP_DEFAULT_PEDESTAL,
    ) == (5.0, 10.0, 20.0, 65.0)


def test_wbpp_formula_weight_hand_computed():
    fwhm = [2.0, 3.0, 2.5]
    eccentricity = [0.4, 0.6, 0.5]
    snr = [10.0, 20.0, 15.0]
    # a = 1 - (F - 2) / 1 = [1, 0, .5]; b = 1 - (e - .4) / .2 = [1, 0, .5];
    # c = (S - 10) / 10 = [0, 1, .5]; w = 65 + 5 a + 10 b + 20 c
    weights = wbpp_formula_weight(fwhm, eccentricity, snr)
    np.testing.assert_allclose(weights, [80.0, 85.0, 82.5])
    np.testing.assert_allclose(
        wbpp_formula_weight(fwhm, eccentricity, snr, normalize=True), np.array([80, 85, 82.5]) / 85
    )
    custom = wbpp_formula_weight(
        fwhm, eccentricity, snr, fwhm_weight=35, eccentricity_weight=35, snr_weight=20, pedestal=10
    )
    np.testing.assert_allclose(custom, [80.0, 30.0, 55.0])


def test_wbpp_formula_weight_terms_without_spread_are_zero_and_extras():
    weights = wbpp_formula_weight([3.0, 3.0], [0.5, 0.5], [10.0, 20.0])
    np.testing.assert_allclose(weights, [65.0, 85.0])
    extras = wbpp_formula_weight(
        [3.0, 3.0, 3.0],
        [0.5, 0.5, 0.5],
        [1.0, 1.0, 1.0],
        pedestal=0.0,
        stars=[100, 200, 150],
        stars_weight=10.0,
        psf_signal=[1.0, 2.0, 4.0],
        psf_signal_weight=20.0,
    )
    np.testing.assert_allclose(extras, [0.0 + 5.0, 10.0 + 10.0, 5.0 + 20.0])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1.0, 2.0], [0.1], [1.0, 2.0]), {}, "one of each"),
        (([1.0], [0.1], [1.0]), {"pedestal": -1.0}, "pedestal"),
        (([1.0, np.nan], [0.1, 0.2], [1.0, 2.0]), {}, "fwhm"),
        (([1.0], [0.1], [1.0]), {"stars_weight": 5.0}, "stars"),
        (([1.0], [0.1], [1.0]), {"psf_snr": [1.0, 2.0], "psf_snr_weight": 5.0}, "psf_snr"),
    ],
)
def test_wbpp_formula_weight_validation(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        wbpp_formula_weight(*args, **kwargs)
