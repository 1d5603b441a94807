"""Normalization stage: global maps and local normalization against known truth."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.models import NormalizationConfig
from pipeline.kernels.localnorm import evaluate_background
from pipeline.stages.normalize import local_normalization, normalize_subs


def _apply(normalization, values):
    return np.asarray(values) * np.asarray(normalization.factor) + np.asarray(normalization.offset)


def test_additive_scaling_with_photometric_scale_matches_level_and_signal():
    # sub 1 sees the sky 30 ADU brighter and the stars at half the flux (clouds)
    norms = normalize_subs([[100.0], [130.0]], [1.0, 2.0], 0, NormalizationConfig())
    assert norms[1].factor == (2.0,)
    np.testing.assert_allclose(_apply(norms[1], [130.0]), [100.0])  # background to the ref
    np.testing.assert_allclose(_apply(norms[1], [180.0]) - 100.0, [100.0])  # star restored


def test_dispersion_scale_is_per_channel_mad_ratio():
    config = NormalizationConfig(scale="dispersion")
    norms = normalize_subs(
        [[100.0, 200.0, 300.0], [110.0, 190.0, 330.0]],
        [1.0, 1.0],
        0,
        config,
        dispersions=[[10.0, 20.0, 30.0], [5.0, 40.0, 30.0]],
    )
    np.testing.assert_allclose(norms[1].factor, [2.0, 0.5, 1.0])
    np.testing.assert_allclose(_apply(norms[1], [110.0, 190.0, 330.0]), [100.0, 200.0, 300.0])


def test_dispersion_scale_without_dispersions_says_what_to_do():
    with pytest.raises(ValueError, match="scale: dispersion needs the dispersion"):
        normalize_subs([[1.0], [2.0]], [1.0, 1.0], 0, NormalizationConfig(scale="dispersion"))


@pytest.mark.parametrize(
    ("method", "factor", "offset"),
    [("additive", 1.0, -30.0), ("multiplicative", 100.0 / 130.0, 0.0), ("none", 1.0, 0.0)],
)
def test_other_methods(method, factor, offset):
    norms = normalize_subs([[100.0], [130.0]], [1.0, 2.0], 0, NormalizationConfig(method=method))
    np.testing.assert_allclose(norms[1].factor, [factor])
    np.testing.assert_allclose(norms[1].offset, [offset])


def test_local_normalization_matches_a_sub_gradient_to_the_reference():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    scene = np.zeros((300, 400), np.float32)
    scene[140:160, 190:210] = 500.0  # an object
    reference = 1000.0 + 0.05 * xx + scene + rng.normal(0, 3, scene.shape).astype(np.float32)
    sub = 600.0 - 0.1 * yy + 0.5 * scene + rng.normal(0, 3, scene.shape).astype(np.float32)
    model = local_normalization(reference, sub, factor=(2.0,), scale=256)
    normalized = 2.0 * sub + evaluate_background(model.grids[0], model.shape)
    background = np.ones(scene.shape, bool)
    background[130:170, 180:220] = False
    residual = (normalized - reference)[background]
    assert abs(np.median(residual)) < 1.0
    # the gradients differ by 0.1*400 + 0.2*300 = 100 ADU across the frame; LN removes them
    blocks = (normalized - reference)[:288, :384].reshape(6, 48, 8, 48)
    assert np.ptp(np.median(blocks, axis=(1, 3))) < 3.0
