"""Band-tiled integration equals the in-memory result bit for bit."""

from __future__ import annotations

import numpy as np

from pipeline.config.models import IntegrationConfig
from pipeline.engine.tasks import integrate_files
from pipeline.engine.tiling import row_bands
from pipeline.io.fits import write_image
from pipeline.stages.integrate import integrate_band
from pipeline.stages.normalize import Normalization


def test_uneven_row_bands_cover_every_row_once():
    bands = list(row_bands((53, 40), 7, memory_limit_mb=7 * 40 * 4 * 6 * 5 / 2**20))
    assert [b.stop - b.start for b in bands] == [5] * 10 + [3]
    assert bands[0].start == 0 and bands[-1].stop == 53


def test_tiled_integration_equals_in_memory(tmp_path):
    rng = np.random.default_rng(12)
    stack = rng.normal(100.0, 5.0, size=(9, 53, 40)).astype(np.float32)
    stack[3, 10:12, :] = 5000.0  # a trail
    stack[5, :4, :7] = np.nan  # a footprint edge
    paths = [write_image(tmp_path / f"sub{i}.fits", frame) for i, frame in enumerate(stack)]
    normalizations = [Normalization((1.0 + 0.01 * i,), (-0.5 * i,)) for i in range(9)]
    weights = np.linspace(0.5, 1.0, 9)
    config = IntegrationConfig()
    eager = integrate_band(stack, normalizations=normalizations, weights=weights, config=config)
    tiny = 9 * 40 * 4 * 6 * 5 / 2**20  # five rows per band: 10 bands of 5 and one of 3
    image, count, low, high, per_sub = integrate_files(
        paths, normalizations, weights, config, memory_limit_mb=tiny
    )
    np.testing.assert_array_equal(image, eager.image)
    np.testing.assert_array_equal(count, eager.count)
    np.testing.assert_array_equal(high, eager.high)
    np.testing.assert_array_equal(per_sub, eager.rejected_per_sub)
    assert high[10:12].sum() == 2 * 40  # the trail is rejected
