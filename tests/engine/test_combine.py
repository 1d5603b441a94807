"""Colour combination of a generated R, G, B mono night against its truth, and of real masters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from PIL import Image

from pipeline.cli import main
from pipeline.config.loader import load_config
from pipeline.config.models import CombineConfig
from pipeline.engine.combine import combine_files, read_channel_master, stretch_from_header
from pipeline.engine.runner import Pipeline
from pipeline.io.fits import read_image, write_image
from pipeline.kernels.stretch import apply_stretch
from pipeline.stages.combine import COLOUR_ROLES, combine_channels
from sample_data import generate_rgb_night, sky

FILTERS = {"red": "R", "green": "G", "blue": "B"}


@pytest.fixture(
    scope="module",
    params=[7, pytest.param(11, marks=pytest.mark.slow), pytest.param(23, marks=pytest.mark.slow)],
    ids=lambda seed: f"seed{seed}",
)
def rgb_run(request, tmp_path_factory):
    """The R, G, B sample night (640x480, 5 subs per filter) processed; other seeds in CI."""
    folder = tmp_path_factory.mktemp("rgb")
    truth = generate_rgb_night(
        folder / "night", rng=np.random.default_rng(request.param), width=640, height=480
    )
    summary = Pipeline(load_config(None), folder / "out").run(folder / "night")
    assert summary.exit_code == 0, summary.manifest["problems"]
    masters = {m["filter"]: m["path"] for m in summary.manifest["masters"]}
    return truth, summary.manifest, masters


def _stage(masters: dict[str, str], **changes):
    """Run the combine stage on the run's masters with some settings changed."""
    config = load_config(None)
    combine = CombineConfig(**changes)
    loaded = {role: read_channel_master(masters[f]) for role, f in FILTERS.items()}
    return combine_channels(
        loaded,
        combine,
        registration=config.registration,
        measurement=config.measurement,
        preview=config.preview,
    )


def _grid_light(truth, manifest):
    """The truth light whose sensor grid the combination uses (the green master's reference)."""
    grid = manifest["combined"]["reference_grid"]
    group = next(m["group"] for m in manifest["masters"] if m["filter"] == grid)
    frame = next(f for f in manifest["frames"] if f["group"] == group and f["reference"])
    return truth.light(Path(frame["path"]).relative_to(truth.root.resolve()).as_posix())


def _truth_colours(truth, grid_light):
    """Stars on the combined grid and their truth colour (R, G, B flux ratios to G).

    Unresolved pairs (closer than 3 px) count as one star with their summed light, as the
    photometry sees them.
    """
    stars = truth.stars_in_sensor(grid_light)
    base = truth.stars[stars["id"], 2]
    flux = np.column_stack([base * truth.star_colour(f)[stars["id"]] for f in ("R", "G", "B")])
    pairs = np.hypot(
        *(
            np.array([stars["x"], stars["y"]])[:, :, None]
            - np.array([stars["x"], stars["y"]])[:, None, :]
        )
    )
    blended = (pairs < 3.0).astype(float) @ flux
    return stars, blended / blended[:, 1:2]


def _photometry(rgb, x, y, radius=8.0):
    fluxes = []
    for plane in rgb:
        data = np.ascontiguousarray(np.nan_to_num(plane, nan=float(np.nanmedian(plane))))
        flux, _, _ = sep.sum_circle(data, x, y, radius, bkgann=(radius + 4, radius + 10))
        fluxes.append(flux)
    return np.column_stack(fluxes)


def test_run_combines_the_rgb_masters_into_a_registered_colour_image(rgb_run):
    truth, manifest, _ = rgb_run
    combined = manifest["combined"]
    outputs = combined["outputs"]
    rgb = read_image(outputs["rgb"])
    assert rgb.shape == (3, truth.height, truth.width) and rgb.dtype == np.float32
    header = fits.getheader(outputs["rgb"])
    assert header["COMBINE"] == "RGB" and header["REFGRID"] == "G"
    assert [header[f"FILTER_{c}"] for c in "RGB"] == ["R", "G", "B"]
    # the masters come from different reference subs: offsets of several pixels
    shifts = [np.hypot(*np.array(r["matrix"])[:2, 2]) for r in combined["registration"].values()]
    assert max(shifts) > 3.0
    assert all(r["rms"] < 0.1 for r in combined["registration"].values())
    # every channel's stars land on the truth positions of the grid's sub
    stars = truth.reference_stars(_grid_light(truth, manifest))
    for plane in rgb:
        data = np.ascontiguousarray(np.nan_to_num(plane, nan=float(np.nanmedian(plane))))
        x, y, _ = sep.winpos(data - np.median(data), stars["x"], stars["y"], 1.5)
        assert np.median(np.hypot(x - stars["x"], y - stars["y"])) < 0.1
    # fit parameters recorded in the header and in run.json
    fit = combined["linear_fit"]
    assert fit["reference"] == "red"  # the brightest sky
    for role, letter in (("green", "G"), ("blue", "B")):
        assert header[f"LFA_{letter}"] == pytest.approx(fit["fits"][role]["intercept"])
        assert header[f"LFB_{letter}"] == pytest.approx(fit["fits"][role]["slope"])
    report = (Path(manifest["output"]) / "report.html").read_text()
    assert "Colour combination" in report and "combined_stf.png" in report
    assert {Path(p).name for p in outputs.values()} >= {
        "combined_RGB.fits",
        "combined_background.fits",
        "combined_linked.png",
        "combined_unlinked.png",
        "combined_stf.png",
    }


def test_linear_fit_matches_the_channel_backgrounds_within_half_a_percent(rgb_run):
    truth, manifest, masters = rgb_run
    sky_only = _sky_mask(truth, manifest)
    before = _stage(masters, linear_fit=None, colour_calibration=None)
    after = _stage(masters, colour_calibration=None)
    levels_before = np.array([np.nanmedian(plane[sky_only]) for plane in before.rgb])
    levels_after = np.array([np.nanmedian(plane[sky_only]) for plane in after.rgb])
    assert np.ptp(levels_before) / levels_before.max() > 0.2  # R, G, B skies differ a lot
    reference = levels_after[COLOUR_ROLES.index(after.linear_fit_reference)]
    np.testing.assert_allclose(levels_after, reference, rtol=0.005)


def _sky_mask(truth, manifest) -> np.ndarray:
    """True where the combined grid shows sky: no nebula (truth) and no star (sep)."""
    grid = _grid_light(truth, manifest)
    nebula = sky.render_nebula(truth.shape, grid.sensor_to_sky, truth.nebula)
    stars = truth.star_image(grid)
    return (nebula < 0.001 * nebula.max()) & (stars < 0.5)


def test_colour_calibration_recovers_the_truth_star_colours_within_three_percent(rgb_run):
    truth, manifest, _ = rgb_run
    combined = manifest["combined"]
    rgb = read_image(combined["outputs"]["rgb"])
    stars, truth_ratio = _truth_colours(truth, _grid_light(truth, manifest))
    # the white reference used: the stars of the WBSTARS table, matched to the truth
    used = fits.getdata(combined["outputs"]["rgb"], "WBSTARS")
    assert len(used) >= 10 and combined["colour_calibration"]["stars"] == len(used)
    distance = np.hypot(used[:, :1] - stars["x"][None], used[:, 1:2] - stars["y"][None])
    matched = np.argmin(distance, axis=1)[np.min(distance, axis=1) < 1.5]
    assert len(matched) == len(used)
    white = np.exp(np.mean(np.log(truth_ratio[matched]), axis=0))
    reference = stars["reference"]
    measured = _photometry(rgb, stars["x"][reference], stars["y"][reference])
    measured_ratio = measured / measured[:, 1:2]
    expected = truth_ratio[reference] / white
    assert np.ptp(expected[:, 0]) > 0.5  # red and blue reference stars
    np.testing.assert_allclose(measured_ratio, expected, rtol=0.03)


@pytest.mark.parametrize(
    ("model", "correction", "limit"),
    [
        ({"method": "polynomial", "order": 2}, "subtract", 0.002),
        ({"method": "polynomial", "order": 2}, "divide", 0.002),
        ({"method": "spline", "smoothing": 1.0}, "subtract", 0.002),
        ({"method": "spline", "smoothing": 1.0}, "divide", 0.002),
    ],
)
def test_background_extraction_leaves_under_a_fifth_of_a_percent_gradient(
    rgb_run, model, correction, limit
):
    truth, manifest, masters = rgb_run
    free = _sky_mask(truth, manifest)
    raw = _stage(masters, background=None, linear_fit=None, colour_calibration=None)
    extracted = _stage(
        masters,
        background={"model": model, "correction": correction},
        linear_fit=None,
        colour_calibration=None,
    )
    for k in range(3):
        level = np.nanmedian(raw.rgb[k][free])
        before = _gradient(raw.rgb[k], free) / level
        after = _gradient(extracted.rgb[k], free) / level
        assert before > 0.02, (k, before)
        assert after < limit, (k, after, before)
        # the sky level is kept (the model's median is added back, or divided by)
        assert np.nanmedian(extracted.rgb[k][free]) == pytest.approx(level, rel=0.005)


def _gradient(plane: np.ndarray, free: np.ndarray, block: int = 32) -> float:
    """Peak-to-peak over the frame of a quadratic surface through the sky-only block medians.

    Blocks that stray from the surface by more than 3 sigma (nebula edges, bright star
    haloes) are dropped before the final fit.
    """
    data = np.where(free, plane, np.nan)
    rows, cols = (s // block for s in data.shape)
    blocks = data[: rows * block, : cols * block].reshape(rows, block, cols, block)
    blocks = blocks.swapaxes(1, 2).reshape(rows * cols, -1)
    enough = np.isfinite(blocks).mean(axis=1) > 0.5
    medians = np.nanmedian(blocks[enough], axis=1)
    y, x = (v.ravel() for v in np.mgrid[:rows, :cols])
    terms = np.column_stack([np.ones(x.size), x, y, x**2, x * y, y**2])
    kept = np.ones(len(medians), dtype=bool)
    for _ in range(5):
        coefficients, *_ = np.linalg.lstsq(terms[enough][kept], medians[kept], rcond=None)
        residual = medians - terms[enough] @ coefficients
        sigma = 1.4826 * np.median(np.abs(residual[kept]))
        kept = np.abs(residual) < 3.0 * sigma
    return float(np.ptp(terms @ coefficients))


def _combine_files(masters, tmp_path, name, **combine):
    config = load_config(None).model_copy(update={"combine": CombineConfig(**combine)})
    paths = {role: masters[f] for role, f in FILTERS.items()}
    return combine_files(paths, config, tmp_path, name=name)


def test_linked_preview_keeps_a_neutral_star_neutral_and_unlinked_equalises(rgb_run, tmp_path):
    truth, manifest, masters = rgb_run
    stars = truth.reference_stars(_grid_light(truth, manifest))
    neutral = stars[stars["teff"] == 6500.0]
    assert len(neutral) >= 2
    white, probe = neutral[0], neutral[1]
    box = (int(white["x"]) - 8, int(white["y"]) - 8, int(white["x"]) + 9, int(white["y"]) + 9)
    calibrated = _combine_files(
        masters,
        tmp_path,
        "neutral",
        colour_calibration={"white_reference": {"method": "region", "box": box}},
    )
    linked = _png(calibrated["outputs"]["linked_preview"])
    unlinked = _png(calibrated["outputs"]["unlinked_preview"])
    side = _png(calibrated["outputs"]["stf_preview"])
    assert side.shape[1] > linked.shape[1] + unlinked.shape[1]  # both, side by side
    colour = _stretched_colour(linked, probe["x"], probe["y"])
    np.testing.assert_allclose(colour / colour[1], 1.0, atol=0.02)
    # without colour calibration the linked stretch shows the cast; unlinked hides it
    raw = _combine_files(masters, tmp_path, "raw", linear_fit=None, colour_calibration=None)
    linked_raw = np.median(_png(raw["outputs"]["linked_preview"]).reshape(-1, 3), axis=0)
    unlinked_raw = np.median(_png(raw["outputs"]["unlinked_preview"]).reshape(-1, 3), axis=0)
    assert np.ptp(linked_raw) > 20
    assert np.ptp(unlinked_raw) <= 2


def test_stf_in_the_header_reproduces_the_previews(rgb_run):
    _, manifest, _ = rgb_run
    outputs = manifest["combined"]["outputs"]
    rgb = read_image(outputs["rgb"])
    header = fits.getheader(outputs["rgb"])
    for linked, key in ((True, "linked_preview"), (False, "unlinked_preview")):
        parameters, lo, hi = stretch_from_header(header, linked=linked)
        unit = np.clip((rgb - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
        pixels = np.round(apply_stretch(unit, parameters) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(np.moveaxis(pixels, 0, -1), _png(outputs[key]))
    linked_parameters, _, _ = stretch_from_header(header, linked=True)
    assert len(set(linked_parameters.midtones)) == 1
    assert len(set(stretch_from_header(header, linked=False)[0].midtones)) == 3


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.float64)


def _stretched_colour(pixels: np.ndarray, x: float, y: float, radius: float = 4.0) -> np.ndarray:
    """Mean displayed R, G, B over the star's disc (about 1.5 FWHM around the truth centre).

    Pixels where some channel is clipped at 255 are left out (their colour is not shown).
    """
    rows, cols = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    disc = (np.hypot(cols - x, rows - y) <= radius) & ~np.any(pixels == 255, axis=-1)
    assert disc.sum() >= 20
    return pixels[disc].mean(axis=0)


@pytest.mark.slow
def test_combine_command_on_three_real_masters_without_a_run_folder(real_data, tmp_path):
    """Seestar S50 M 94 lights (tinystork/zeseestarstacker, GPL-3.0): two runs on disjoint subs
    give masters on different grids (alt-az field rotation); their planes are the channels."""
    lights = sorted((real_data / "seestar_s50_m94_osc" / "lights").glob("*.fit"))
    planes = {}
    for half, chosen in (("a", lights[:4]), ("b", lights[4:])):
        night = tmp_path / f"night_{half}"
        night.mkdir()
        for light in chosen:
            (night / light.name).symlink_to(light)
        assert main(["run", str(night), "-o", str(tmp_path / f"out_{half}")]) == 0
        manifest = json.loads((tmp_path / f"out_{half}" / "run.json").read_text())
        planes[half] = read_image(manifest["masters"][0]["path"])
        previews = manifest["masters"][0]["preview"]
    # the colour master itself: its linked preview shows the camera's green cast...
    cast = np.median(_png(previews).reshape(-1, 3), axis=0)
    assert cast[1] - max(cast[0], cast[2]) > 50
    # ...which neutralization and the stellar white balance remove (planes kept in place)
    assert main(["combine", manifest["masters"][0]["path"], "-o", str(tmp_path / "osc")]) == 0
    neutral = np.median(_png(tmp_path / "osc" / "combined_linked.png").reshape(-1, 3), axis=0)
    assert np.ptp(neutral) <= 2
    files = []
    for letter, (half, index) in zip("RGB", (("a", 0), ("b", 1), ("a", 2)), strict=True):
        path = tmp_path / "masters" / f"master_{letter}.fits"
        write_image(path, planes[half][index], cards={"FILTER": letter})
        files.append(str(path))
    output = tmp_path / "colour"
    assert main(["combine", *files, "-o", str(output), "--name", "m94"]) == 0
    assert not (output / "run.json").exists()
    rgb = read_image(output / "m94.fits")
    header = fits.getheader(output / "m94.fits")
    assert rgb.shape == (3, 1920, 1080)
    assert header["REFGRID"] == "G" and header["REGRMS_R"] < 0.5 and header["REGRMS_B"] < 0.5
    # the red and blue planes (from the other run's grid) now sit on the green plane's stars
    planes = [np.ascontiguousarray(np.nan_to_num(p, nan=float(np.nanmedian(p)))) for p in rgb]
    planes = [p - sep.Background(p, bw=64, bh=64).back() for p in planes]
    noise = 1.4826 * np.median(np.abs(planes[1] - np.median(planes[1])))
    objects = sep.extract(planes[1], 10.0, err=noise, minarea=9)
    objects = objects[(objects["flag"] == 0) & (objects["peak"] < 0.5 * planes[1].max())]
    objects = objects[np.argsort(objects["flux"])[::-1][:25]]
    assert len(objects) >= 10
    centroids = [
        np.column_stack(sep.winpos(p, objects["x"], objects["y"], 1.5)[:2]) for p in planes
    ]
    assert np.median(np.hypot(*(centroids[0] - centroids[1]).T)) < 0.2
    assert np.median(np.hypot(*(centroids[2] - centroids[1]).T)) < 0.2
    for key in ("LFB_R", "LFB_B", "WBFAC_R", "WBFAC_B", "STFLM_G", "STFUM_B"):
        assert np.isfinite(header[key]), key
    for suffix in ("_linked.png", "_unlinked.png", "_stf.png", "_background.fits"):
        assert (output / f"m94{suffix}").is_file()


def test_combine_command_palettes_and_luminance(rgb_run, tmp_path):
    _, _, masters = rgb_run
    red, green, blue = (masters[f] for f in ("R", "G", "B"))
    # HOO: two masters, the second (here the G master standing in for OIII) feeds G and B
    assert (
        main(["combine", "--palette", "hoo", red, green, "-o", str(tmp_path), "--name", "hoo"]) == 0
    )
    hoo = read_image(tmp_path / "hoo.fits")
    header = fits.getheader(tmp_path / "hoo.fits")
    assert header["COMBINE"] == "HOO" and header["FILTER_G"] == header["FILTER_B"] == "G"
    np.testing.assert_array_equal(hoo[1], hoo[2])
    # SHO: SII, Ha, OIII in that order become R, G, B
    assert (
        main(
            ["combine", "--palette", "sho", blue, red, green, "-o", str(tmp_path), "--name", "sho"]
        )
        == 0
    )
    header = fits.getheader(tmp_path / "sho.fits")
    assert [header[f"FILTER_{c}"] for c in "RGB"] == ["B", "R", "G"]
    # a luminance master defines the grid and is kept alongside, registered
    args = ["combine", red, green, blue, "-L", blue, "-o", str(tmp_path), "--name", "lrgb"]
    assert main(args) == 0
    header = fits.getheader(tmp_path / "lrgb.fits")
    luminance = read_image(tmp_path / "lrgb_L.fits")
    assert header["REFGRID"] == "B" and header["REGRMS_R"] < 0.1 and header["REGRMS_B"] == 0.0
    assert luminance.shape == read_image(tmp_path / "lrgb.fits").shape[1:]
    assert fits.getheader(tmp_path / "lrgb_background.fits")["PLANES"] == "R,G,B,L"


def test_combine_command_explains_bad_input(rgb_run, tmp_path, capsys):
    _, _, masters = rgb_run
    assert main(["combine", masters["R"], masters["G"], "-o", str(tmp_path)]) == 1
    assert "the rgb palette takes 3 master files, got 2" in capsys.readouterr().err
    assert main(["combine", "--run", str(tmp_path), "-o", str(tmp_path)]) == 1
    assert "cannot read the run's manifest" in capsys.readouterr().err
    box = "combine.colour_calibration.white_reference={method: region, box: [40, 40, 45, 45]}"
    args = ["combine", masters["R"], masters["G"], masters["B"], "--set", box, "-o", str(tmp_path)]
    assert main(args) == 1
    assert "no signal above its surroundings" in capsys.readouterr().err


def test_combine_command_on_a_run_folder(rgb_run, tmp_path):
    _, manifest, _ = rgb_run
    run_folder = Path(manifest["output"])
    output = tmp_path / "again"
    assert main(["combine", "--run", str(run_folder), "-o", str(output)]) == 0
    np.testing.assert_array_equal(
        read_image(output / "combined.fits"), read_image(manifest["combined"]["outputs"]["rgb"])
    )


def test_sample_command_writes_the_rgb_night(tmp_path):
    assert main(["sample", "--rgb", str(tmp_path / "night"), "--seed", "3"]) == 0
    filters = {fits.getheader(p)["FILTER"] for p in (tmp_path / "night").rglob("LIGHT/*.fits")}
    assert filters == {"R", "G", "B"}
    assert (tmp_path / "night" / "truth" / "truth.json").is_file()


def test_combine_command_on_one_colour_master(rgb_run, tmp_path):
    """A one-shot-colour master's planes share a grid: calibrated in place, not resampled."""
    _, manifest, masters = rgb_run
    raw = _stage(masters, background=None, linear_fit=None, colour_calibration=None)
    colour_master = tmp_path / "master_rgb.fits"
    write_image(colour_master, raw.rgb)
    assert main(["combine", str(colour_master), "-o", str(tmp_path), "--name", "osc"]) == 0
    header = fits.getheader(tmp_path / "osc.fits")
    assert [header[f"REGRMS_{c}"] for c in "RGB"] == [0.0, 0.0, 0.0]
    assert header["SOURCE_R"] == "master_rgb.fits[R]"
    calibrated = read_image(tmp_path / "osc.fits")
    np.testing.assert_array_equal(np.isnan(calibrated), np.isnan(raw.rgb))
    # the same data as the three mono masters: the same white balance
    factors = manifest["combined"]["colour_calibration"]["factors"]
    np.testing.assert_allclose([header[f"WBFAC_{c}"] for c in "RGB"], factors, rtol=0.01)


def test_plan_knows_whether_the_combination_is_cached(rgb_run):
    truth, manifest, _ = rgb_run
    output = Path(manifest["output"])
    cached = Pipeline(load_config(None), output).plan(truth.root)["cache"]["combine"]
    assert cached == {"cached": 1, "to_compute": 0, "unknown": 0}
    edited = load_config(None, ["combine.background.model.order=1"])
    status = Pipeline(edited, output).plan(truth.root)["cache"]
    assert status["combine"] == {"cached": 0, "to_compute": 1, "unknown": 0}
    assert status["integrate"]["cached"] == 3  # only the combination is redone
