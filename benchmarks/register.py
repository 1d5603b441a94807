"""Registration benchmark: one 12-megapixel sub, measurement included, LinearLink vs astroalign.

Both sides start from the same calibrated float32 frames of a synthetic star field (Moffat
stars, sky noise, a dither of (17.3, -9.6) px and 0.4 deg) and end with the sub resampled onto
the reference grid. LinearLink measures the sub (sep detection, Moffat PSF fits, MRS noise,
weights), matches its star list to the reference's (measured once per group, so not timed),
refines the transform and resamples with Lanczos-3; ``astroalign.register`` detects stars in
both frames, matches them and resamples with scikit-image.

Run:  python benchmarks/register.py [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import time

import astroalign
import numpy as np

from pipeline.config.models import MeasurementConfig, RegistrationConfig
from pipeline.stages.measure import measure_frame
from pipeline.stages.register import solve_transform, warp_to_reference
from sample_data import sky


def _frames(width: int, height: int, rng: np.random.Generator):
    count = int(2.5e-4 * width * height)  # ~3000 stars on 12 Mpx
    margin = 60.0
    x = rng.uniform(-margin, width + margin, count)
    y = rng.uniform(-margin, height + margin, count)
    flux = 2e3 * (1.0 - rng.uniform(0, 0.999, count)) ** (-1 / 0.7)
    flux = np.minimum(flux, 3e6)
    angle = np.deg2rad(0.4)
    truth = np.array(
        [
            [np.cos(angle), -np.sin(angle), 17.3],
            [np.sin(angle), np.cos(angle), -9.6],
            [0.0, 0.0, 1.0],
        ]
    )
    reference = sky.render_stars((height, width), x, y, flux, 3.0)
    sx, sy = sky.apply_affine(np.linalg.inv(truth), x, y)
    sub = sky.render_stars((height, width), sx, sy, flux, 3.0)
    frames = []
    for image in (reference, sub):
        noisy = rng.poisson(np.clip(image + 400.0, 0, None)).astype(np.float32)
        frames.append(noisy + rng.normal(0, 5, noisy.shape).astype(np.float32))
    return frames[0], frames[1], truth


def _grid_error(matrix: np.ndarray, truth: np.ndarray, width: int, height: int) -> float:
    gx, gy = (
        a.ravel() for a in np.meshgrid(np.linspace(0, width - 1, 9), np.linspace(0, height - 1, 9))
    )
    a = sky.apply_affine(matrix, gx, gy)
    b = sky.apply_affine(truth, gx, gy)
    return float(np.sqrt(np.mean((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT (default 12 Mpx)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(42)
    reference, sub, truth = _frames(width, height, rng)
    measurement, registration = MeasurementConfig(), RegistrationConfig()
    reference_stars = measure_frame(reference, measurement).stars

    start = time.perf_counter()
    measured = measure_frame(sub, measurement)
    solution = solve_transform(measured.stars, reference_stars, registration)
    warp_to_reference(
        sub,
        solution.matrix,
        reference_shape=(height, width),
        interpolation=registration.interpolation,
    )
    ours = time.perf_counter() - start

    start = time.perf_counter()
    transform, _ = astroalign.find_transform(sub, reference)
    astroalign.apply_transform(transform, sub, reference)
    theirs = time.perf_counter() - start

    print(f"{width}x{height} sub ({width * height / 1e6:.1f} Mpx), one sub registered")
    print(f"{'':<34}{'seconds':>9}{'error (px RMS)':>16}")
    print(
        f"{'LinearLink (measure+match+Lanczos3)':<34}{ours:>9.2f}"
        f"{_grid_error(solution.matrix, truth, width, height):>16.4f}"
    )
    print(
        f"{'astroalign.register':<34}{theirs:>9.2f}"
        f"{_grid_error(transform.params, truth, width, height):>16.4f}"
    )
    print(f"speed ratio (astroalign / LinearLink): {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
