"""Integration benchmark: LinearLink vs ccdproc.combine on the same 12-megapixel float32 subs.

For each N, N synthetic registered subs (4000x3000 float32 FITS: sky, stars, noise, one trail)
are written to a scratch folder; then, each in a fresh subprocess so peak RSS is its own:

* LinearLink: band-tiled winsorized sigma clipping + weighted mean (``integrate_files``)
  with the shipped integration settings (noise-equalised rejection with a noise floor,
  large-scale rejection, seeing-matched tests for subs of a nominal 3 px FWHM) and
  ``memory_limit_mb`` as configured;
* ccdproc: ``ccdproc.combine(files, method="average", sigma_clip=True, mem_limit=...)``.

It prints seconds, throughput (megapixel-subs per second), peak RSS and the ratio.

Run:  python benchmarks/integrate.py --n 20 50 200 [--memory-limit-mb 2048] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NOMINAL_FWHM = 3.0
"""FWHM (px) the seeing-matched rejection is given for these subs."""


def _write_subs(folder: Path, count: int, width: int, height: int) -> list[str]:
    from pipeline.io.fits import write_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    sky = (500.0 + 0.01 * xx + 0.02 * yy).astype(np.float32)
    paths = []
    for index in range(count):
        frame = sky + rng.normal(0.0, 10.0, size=sky.shape).astype(np.float32)
        if index == 0:
            frame[height // 2 : height // 2 + 3, :] += 3000.0
        path = folder / f"sub{index:03d}.fits"
        write_image(path, frame)
        paths.append(str(path))
    return paths


def _run_linearlink(paths: list[str], memory_limit_mb: float) -> None:
    from pipeline.config.models import IntegrationConfig, WinsorizedSigmaRejection
    from pipeline.engine.tasks import integrate_files
    from pipeline.stages.normalize import Normalization

    defaults = IntegrationConfig()  # large-scale rejection and noise equalisation as shipped
    normalizations = [Normalization((1.0,), (0.0,)) for _ in paths]
    integrate_files(
        paths,
        normalizations,
        np.ones(len(paths)),
        WinsorizedSigmaRejection(),
        memory_limit_mb=memory_limit_mb,
        sub_noise=np.full(len(paths), 10.0),
        pivot=[500.0],
        large_scale=defaults.large_scale_rejection,
        psf_match_sigmas=[f * NOMINAL_FWHM for f in defaults.psf_matched_rejection.blur_fwhm],
    )


def _run_ccdproc(paths: list[str], memory_limit_mb: float) -> None:
    import ccdproc

    ccdproc.combine(
        paths,
        method="average",
        sigma_clip=True,
        sigma_clip_low_thresh=4,
        sigma_clip_high_thresh=3,
        mem_limit=memory_limit_mb * 2**20,
        unit="adu",
        dtype=np.float32,
    )


def _child(engine: str, listing: str, memory_limit_mb: float) -> None:
    paths = json.loads(Path(listing).read_text())
    start = time.perf_counter()
    (_run_linearlink if engine == "linearlink" else _run_ccdproc)(paths, memory_limit_mb)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def _measure(engine: str, listing: Path, memory_limit_mb: float) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", engine, str(listing), str(memory_limit_mb)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _warm_up() -> None:
    """Compile LinearLink's kernels once (numba caches them on disk), as any first run does."""
    with tempfile.TemporaryDirectory(prefix="llwarm-") as scratch:
        listing = Path(scratch) / "files.json"
        listing.write_text(json.dumps(_write_subs(Path(scratch), 5, 64, 48)))
        _measure("linearlink", listing, 2048.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20, 50, 200])
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--memory-limit-mb", type=float, default=2048.0)
    parser.add_argument("--skip-ccdproc", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], float(args.child[2]))
        return
    width, height = (int(v) for v in args.size.split("x"))
    _warm_up()
    print(f"{'N':>5} {'engine':<11} {'seconds':>9} {'Mpx-subs/s':>11} {'peak RSS MB':>12}")
    for count in args.n:
        with tempfile.TemporaryDirectory(prefix="llbench-") as scratch:
            folder = Path(scratch)
            listing = folder / "files.json"
            listing.write_text(json.dumps(_write_subs(folder, count, width, height)))
            work = count * width * height / 1e6
            results = {"linearlink": _measure("linearlink", listing, args.memory_limit_mb)}
            if not args.skip_ccdproc:
                results["ccdproc"] = _measure("ccdproc", listing, args.memory_limit_mb)
            for engine, result in results.items():
                print(
                    f"{count:>5} {engine:<11} {result['seconds']:>9.1f} "
                    f"{work / result['seconds']:>11.1f} {result['peak_mb']:>12.0f}"
                )
            if "ccdproc" in results:
                ratio = results["ccdproc"]["seconds"] / results["linearlink"]["seconds"]
                print(f"{count:>5} throughput ratio LinearLink/ccdproc: {ratio:.1f}x")


if __name__ == "__main__":
    main()
