from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.models import RegistrationConfig
from pipeline.errors import RegistrationError
from pipeline.stages.register import fit_transform, solve_transform


def _apply(matrix, points):
    out = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return out[:, :2] / out[:, 2:]


@pytest.mark.parametrize(
    ("model", "matrix"),
    [
        ("similarity", np.array([[0.999, -0.02, 5.3], [0.02, 0.999, -2.4], [0, 0, 1]])),
        ("affine", np.array([[1.01, -0.02, 5.3], [0.03, 0.98, -2.4], [0, 0, 1]])),
        ("homography", np.array([[1.01, -0.02, 5.3], [0.03, 0.98, -2.4], [1e-5, -2e-5, 1]])),
    ],
)
def test_fit_transform_recovers_exact_models(model, matrix):
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 1000, size=(40, 2))
    fitted = fit_transform(model, source, _apply(matrix, source), rng.uniform(0.5, 2, 40))
    np.testing.assert_allclose(fitted, matrix, rtol=1e-8, atol=1e-9)


def _star_field(rng, count):
    xy = rng.uniform(20, 1000, size=(count, 2))
    flux = rng.pareto(1.5, size=count) * 1000 + 100
    order = np.argsort(flux)[::-1]
    return np.column_stack([xy, flux])[order]


def test_meridian_flip_with_noisy_centroids_is_solved_within_0_02_px():
    rng = np.random.default_rng(2)
    reference = _star_field(rng, 150)
    angle = np.deg2rad(180.2)
    truth = np.array(
        [[np.cos(angle), -np.sin(angle), 1010.0], [np.sin(angle), np.cos(angle), 1030.0], [0, 0, 1]]
    )
    sub_xy = _apply(np.linalg.inv(truth), reference[:, :2]) + rng.normal(0, 0.02, (150, 2))
    sub = np.column_stack([sub_xy, reference[:, 2] * 0.8])
    solution = solve_transform(sub, reference, RegistrationConfig())
    grid = np.array([[0, 0], [1023, 0], [0, 1023], [1023, 1023], [512, 512]], dtype=float)
    error = np.hypot(*(_apply(solution.matrix, grid) - _apply(truth, grid)).T)
    assert error.max() < 0.02
    assert solution.flux_ratio == pytest.approx(1 / 0.8, rel=1e-6)


def test_too_few_stars_is_a_registration_error_with_advice():
    stars = np.array([[10.0, 10.0, 5.0], [20.0, 30.0, 4.0]])
    with pytest.raises(RegistrationError, match="lower measurement.detection_sigma"):
        solve_transform(stars, stars, RegistrationConfig())
