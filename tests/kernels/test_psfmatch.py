"""The seeing-difference model: its terms, its fit, and what it leaves of a blurrier sub."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.kernels import psfmatch
from sample_data.sky import render_stars


def moffat_field(shape, stars, fwhm):
    """Noiseless Moffat stars ``(x, y, flux)`` arrays on a zero background (float32)."""
    return render_stars(shape, *stars, fwhm).astype(np.float32)


def star_list(rng, shape, n):
    """``n`` stars away from the edges, fluxes log-uniform over 10^3.5 - 10^5.5."""
    return (
        rng.uniform(12, shape[1] - 12, n),
        rng.uniform(12, shape[0] - 12, n),
        10.0 ** rng.uniform(3.5, 5.5, n),
    )


def test_terms_are_gaussian_blur_minus_signal_and_bands_agree():
    rng = np.random.default_rng(1)
    signal = rng.gamma(1.0, 50.0, (60, 50)).astype(np.float32)
    sigmas = (1.0, 2.5)
    basis = psfmatch.blur_basis(signal, sigmas)
    assert basis.shape == (2, 60, 50)
    for k, sigma in enumerate(sigmas):
        expected = ndimage.gaussian_filter(signal, sigma, mode="nearest") - signal
        np.testing.assert_allclose(basis[k], expected, atol=1e-3)
    radius = psfmatch.basis_radius(sigmas)
    assert radius == 10
    band = psfmatch.blur_basis(signal[20 - radius : 40 + radius], sigmas)
    np.testing.assert_array_equal(band[:, radius:-radius], basis[:, 20:40])


def test_source_signal_keeps_only_what_is_above_the_threshold():
    mean = np.array([[100.0, 104.0, np.nan], [130.0, 99.0, 103.1]], dtype=np.float32)
    signal = psfmatch.source_signal(mean, 100.0, 3.0)
    np.testing.assert_allclose(signal, [[0.0, 4.0, 0.0], [30.0, 0.0, 3.1]], atol=1e-4)


def test_model_explains_a_blurrier_and_a_sharper_sub():
    """Stars of FWHM 3.0 in the stack; a sub at 4.4 px and one at 2.2 px: the fitted model
    takes off at least 85 % of the difference's power at the sources."""
    rng = np.random.default_rng(2)
    shape = (160, 160)
    stars = star_list(rng, shape, 25)
    stack = moffat_field(shape, stars, 3.0)
    sigmas = (0.35 * 3.0, 0.85 * 3.0)
    signal = psfmatch.source_signal(stack, 0.0, 5.0)
    basis = psfmatch.blur_basis(signal, sigmas)
    sources = signal > 0
    for fwhm in (4.4, 2.2):
        sub = moffat_field(shape, stars, fwhm)
        difference = (sub - stack)[sources][None]
        ata, atb = psfmatch.normal_equations(difference, basis[:, sources])
        coefficients = psfmatch.solve_coefficients(ata, atb)[0]
        model = np.tensordot(coefficients, basis[:, sources], axes=1)
        left = np.sum((difference[0] - model) ** 2) / np.sum(difference[0] ** 2)
        print(f"FWHM {fwhm}: coefficients {coefficients}, power left {left:.3f}")
        assert left < 0.15
        assert (coefficients[0] > 0) == (fwhm > 3.0)  # blurs for the blurrier, sharpens


def test_fit_ignores_cosmic_rays():
    rng = np.random.default_rng(3)
    shape = (160, 160)
    stars = star_list(rng, shape, 25)
    stack = moffat_field(shape, stars, 3.0)
    sub = moffat_field(shape, stars, 4.0) + rng.normal(0.0, 2.0, shape).astype(np.float32)
    signal = psfmatch.source_signal(stack, 0.0, 5.0)
    basis = psfmatch.blur_basis(signal, (1.0, 2.5))
    sources = np.flatnonzero(signal.ravel() > 0)
    clean = (sub - stack).ravel()[sources][None]
    hit = clean.copy()
    hit[0, rng.choice(sources.size, 40, replace=False)] += 20000.0
    coefficients = [
        psfmatch.solve_coefficients(*psfmatch.normal_equations(d, basis.reshape(2, -1)[:, sources]))
        for d in (clean, hit)
    ]
    np.testing.assert_allclose(coefficients[1], coefficients[0], rtol=0.02, atol=0.01)


def test_too_few_sources_or_a_singular_system_leave_the_sub_unmatched():
    basis = np.ones((2, 30), dtype=np.float32)
    ata, atb = psfmatch.normal_equations(np.ones((1, 30), dtype=np.float32), basis)
    assert not ata.any()
    singular = np.ones((1, 2, 2))
    assert psfmatch.solve_coefficients(singular, np.ones((1, 2))).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("sigmas", [(1.0,), (0.6, 1.4, 3.1)])
def test_a_band_with_the_radius_as_halo_gets_the_whole_image_terms(sigmas):
    rng = np.random.default_rng(4)
    signal = rng.gamma(1.0, 50.0, (80, 30)).astype(np.float32)
    radius = psfmatch.basis_radius(sigmas)
    assert radius == int(4.0 * max(sigmas) + 0.5)
    whole = psfmatch.blur_basis(signal, sigmas)
    band = psfmatch.blur_basis(signal[30 - radius : 50 + radius], sigmas)
    np.testing.assert_array_equal(band[:, radius:-radius], whole[:, 30:50])


def test_fit_uses_the_strongest_source_pixels_when_there_are_too_many():
    sources = np.array([True, False, True, True, True])
    basis = np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 9.0, -7.0, 1.0, 3.0]])
    np.testing.assert_array_equal(psfmatch.fit_pixels(sources, basis, limit=10), [0, 2, 3, 4])
    np.testing.assert_array_equal(psfmatch.fit_pixels(sources, basis, limit=2), [0, 2])
