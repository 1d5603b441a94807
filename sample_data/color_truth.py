"""Ground truth of a synthetic one-shot-colour (Bayer CFA) night.

Conventions
-----------
* ``x`` is the column, ``y`` the row, pixel centres at integers (``image[y, x]``),
  as in :mod:`sample_data.truth`. Each light's ``matrix`` is a 3x3 affine ``T``
  with ``(x_sensor, y_sensor, 1) = T @ (x_sky, y_sky, 1)``.
* Channels are always ordered ``R, G, B`` (index 0, 1, 2).
* The Bayer ``pattern`` string is row-major over the 2x2 cell at the array
  origin: raw pixel ``image[y, x]`` (the FITS data as read by astropy,
  ``ROWORDER = 'TOP-DOWN'``, ``XBAYROFF = YBAYROFF = 0``) sees channel
  ``pattern[2 * (y % 2) + (x % 2)]``; ``"RGGB"`` puts R at ``[0, 0]``, G at
  ``[0, 1]`` and ``[1, 0]``, B at ``[1, 1]``.
* "ADU" fluxes and levels are what a correct calibration recovers: bias and
  dark subtracted, divided by a master flat normalised to median 1 separately
  on each CFA channel's sites. They include the camera's per-channel QE and the
  atmospheric transmission, and exclude the flat's spatial response.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sample_data import sky
from sample_data.truth import (
    CalibrationFrameTruth,
    LightGeometry,
    LightLookup,
    SensorTruth,
    _jsonable,
    read_truth_folder,
    write_truth_folder,
)

__all__ = [
    "CHANNELS",
    "COLOR_STAR_DTYPE",
    "PATTERNS",
    "ColorLightTruth",
    "ColorNightTruth",
    "cfa_channel_index",
    "load_color_truth",
    "mosaic",
]

CHANNELS = ("R", "G", "B")
PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
COLOR_STAR_DTYPE = np.dtype(
    [
        ("id", np.int64),
        ("x", np.float64),
        ("y", np.float64),
        ("flux_r", np.float64),
        ("flux_g", np.float64),
        ("flux_b", np.float64),
        ("peak_adu", np.float64),
        ("teff", np.float64),
        ("reference", np.bool_),
    ]
)
_ARRAY_FILES = ("stars", "hot_pixels", "bias_pattern", "dark_current")

Matrix3 = tuple[tuple[float, float, float], ...]
Triple = tuple[float, float, float]


def cfa_channel_index(pattern: str, shape: tuple[int, int]) -> NDArray[np.int8]:
    """Channel index (0 = R, 1 = G, 2 = B) that each raw pixel sees.

    Parameters
    ----------
    pattern : str
        Bayer pattern, row-major over the 2x2 cell at ``[0, 0]`` (e.g. ``"RGGB"``).
    shape : tuple of int
        ``(height, width)``.

    Returns
    -------
    ndarray
        int8 array of shape ``shape``.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; expected one of {PATTERNS}")
    cell = np.array([CHANNELS.index(c) for c in pattern], dtype=np.int8).reshape(2, 2)
    height, width = shape
    return cell[np.arange(height)[:, None] % 2, np.arange(width)[None, :] % 2]


def mosaic(rgb: NDArray[np.floating], pattern: str) -> NDArray[np.floating]:
    """Sample a full-resolution ``(3, height, width)`` RGB image through the CFA.

    Parameters
    ----------
    rgb : ndarray
        Channels ``R, G, B`` stacked on axis 0.
    pattern : str
        Bayer pattern (see :func:`cfa_channel_index`).

    Returns
    -------
    ndarray
        ``(height, width)`` mosaic: pixel ``(y, x)`` is ``rgb[c(y, x), y, x]``.
    """
    index = cfa_channel_index(pattern, rgb.shape[1:])
    return np.take_along_axis(rgb, index[None].astype(np.intp), axis=0)[0]


@dataclass(frozen=True)
class ColorLightTruth(LightGeometry):
    """Truth of one colour light sub.

    Attributes
    ----------
    index : int
        Position in ``ColorNightTruth.light_frames`` (chronological order).
    path : str
        Path relative to the night folder (POSIX separators).
    exposure : float
        Exposure (s).
    date_obs : str
        DATE-OBS written in the header.
    ccd_temp : float
        CCD-TEMP written in the header.
    matrix : tuple
        3x3 sky -> sensor affine matrix (row-major nested tuples).
    fwhm : float
        Moffat FWHM (pixels), the same in every channel.
    transmission : float
        Atmospheric transmission applied to stars and nebula.
    sky_adu : tuple of float
        ``(R, G, B)`` sky level at the frame centre (ADU per pixel, QE included,
        before the flat response).
    sky_gradient : tuple of float
        ``(R, G, B)`` fractional sky change from the centre to a corner along
        ``sky_gradient_angle``.
    sky_gradient_angle : float
        Direction of increasing sky (radians from +x, sensor frame).
    cosmic_rays : tuple
        ``(x, y, adu)`` per affected raw pixel.
    """

    index: int
    path: str
    exposure: float
    date_obs: str
    ccd_temp: float
    matrix: Matrix3
    fwhm: float
    transmission: float
    sky_adu: Triple
    sky_gradient: Triple
    sky_gradient_angle: float
    cosmic_rays: tuple[tuple[int, int, float], ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColorLightTruth:
        """Rebuild from the JSON form."""
        data = dict(data)
        data["matrix"] = tuple(tuple(float(v) for v in row) for row in data["matrix"])
        data["sky_adu"] = tuple(float(v) for v in data["sky_adu"])
        data["sky_gradient"] = tuple(float(v) for v in data["sky_gradient"])
        data["cosmic_rays"] = tuple(
            (int(x), int(y), float(a)) for x, y, a in data.get("cosmic_rays", ())
        )
        return cls(**data)


@dataclass(frozen=True, eq=False)
class ColorNightTruth(LightLookup):
    """Everything that went into a synthetic one-shot-colour night.

    Attributes
    ----------
    version : str
        Generator version.
    seed : int or None
        Seed used (None when the caller passed its own generator).
    width, height : int
        Sensor size.
    pattern : str
        Bayer pattern (see the module docstring for the convention).
    psf_beta : float
        Moffat beta of every sub.
    exposure : float
        Light exposure (s); darks have the same exposure.
    sensor : SensorTruth
        Electrical truth (gain in e-/ADU).
    qe : dict
        ``channel -> relative quantum efficiency`` (G = 1).
    sky_rate : dict
        ``channel -> nominal detected sky rate`` at the frame centre (e-/s/px, QE
        included, before the flat response); each light scales it slightly.
    nebula_rate : dict
        ``channel -> detected nebula rate`` per unit blob amplitude (e-/s/px, QE
        included, at transmission 1).
    flat_level : dict
        ``channel -> flat illumination`` (ADU above bias and dark, on that
        channel's CFA sites, where the flat response is 1, i.e. at its median).
    flat_exposure : float
        Flat exposure (s).
    nebula : tuple of NebulaBlob
        Nebula components (sky coordinates).
    light_frames : tuple of ColorLightTruth
        Lights in chronological order.
    bias_frames, dark_frames, flat_frames : tuple of CalibrationFrameTruth
        Calibration frames (``filter`` is None: no filter on an OSC camera).
    n_reference : int
        The first ``n_reference`` rows of ``stars`` are bright reference stars
        (brightest channel peaking at 27000-45000 ADU in the sharpest seeing)
        with a spread of colours (3400-13000 K), at least 50 px inside the
        undithered frame, 80 px apart, and with no other star within 30 px.
    stars : ndarray
        ``(n, 6)``: sky ``x, y``; photon rates ``R, G, B`` (e-/s a QE-1 channel
        would detect at transmission 1); effective temperature (K).
    hot_pixels : ndarray
        ``(n, 3)``: sensor ``x, y`` and dark rate (e-/s), brightest first.
    bias_pattern : ndarray
        Expected bias frame (ADU): ``bias_level`` plus the per-column pattern.
    dark_current : ndarray
        Dark current per pixel (e-/s), hot pixels included.
    flat_responses : dict
        ``channel -> (height, width)`` float32 multiplicative response
        (vignetting x dust x PRNU, slightly tinted per channel), normalised so
        its median over that channel's CFA sites is 1. Only those sites are
        used in the raw frames; see :meth:`cfa_flat_response`.
    root : Path or None
        Folder the night was written to / loaded from.
    """

    version: str
    seed: int | None
    width: int
    height: int
    pattern: str
    psf_beta: float
    exposure: float
    sensor: SensorTruth
    qe: dict[str, float]
    sky_rate: dict[str, float]
    nebula_rate: dict[str, float]
    flat_level: dict[str, float]
    flat_exposure: float
    nebula: tuple[sky.NebulaBlob, ...]
    light_frames: tuple[ColorLightTruth, ...]
    bias_frames: tuple[CalibrationFrameTruth, ...]
    dark_frames: tuple[CalibrationFrameTruth, ...]
    flat_frames: tuple[CalibrationFrameTruth, ...]
    n_reference: int
    stars: NDArray[np.float64] = field(repr=False)
    hot_pixels: NDArray[np.float64] = field(repr=False)
    bias_pattern: NDArray[np.float32] = field(repr=False)
    dark_current: NDArray[np.float32] = field(repr=False)
    flat_responses: dict[str, NDArray[np.float32]] = field(repr=False)
    root: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def qe_array(self) -> NDArray[np.float64]:
        """QE as an ``(R, G, B)`` array."""
        return np.array([self.qe[c] for c in CHANNELS], dtype=np.float64)

    def channel_index(self) -> NDArray[np.int8]:
        """Channel (0 = R, 1 = G, 2 = B) each raw pixel sees, ``(height, width)``."""
        return cfa_channel_index(self.pattern, self.shape)

    def channel_mask(self, channel: str) -> NDArray[np.bool_]:
        """Boolean mask of the raw pixels that see ``channel`` (``"R"``, ``"G"``, ``"B"``)."""
        return self.channel_index() == CHANNELS.index(channel)

    def mosaic(self, rgb: NDArray[np.floating]) -> NDArray[np.floating]:
        """Sample a ``(3, height, width)`` image through this night's CFA."""
        return mosaic(rgb, self.pattern)

    def lights(self) -> tuple[ColorLightTruth, ...]:
        """All lights, chronological."""
        return self.light_frames

    def flat_response(self, channel: str) -> NDArray[np.float32]:
        """Full-resolution response of ``channel`` (median 1 on its CFA sites)."""
        return self.flat_responses[channel]

    def cfa_flat_response(self) -> NDArray[np.float32]:
        """The response each raw pixel has (its own channel's), ``(height, width)``.

        This is what a perfect master flat normalised per CFA channel equals.
        """
        stack = np.stack([self.flat_responses[c] for c in CHANNELS])
        return self.mosaic(stack)

    def star_channel_flux_adu(self, light: int | str | ColorLightTruth) -> NDArray[np.float64]:
        """Total ``(R, G, B)`` flux of every catalogue star in ``light``, ``(n, 3)``.

        ADU that calibration (bias/dark subtracted, flat normalised to median 1
        per CFA channel) plus debayering must recover: QE and transmission
        included, flat's spatial response excluded. The raw mosaic holds about
        1/4 of the R and B flux and 1/2 of the G flux.
        """
        lt = self.light(light)
        scale = self.qe_array * (lt.transmission * lt.exposure / self.sensor.gain)
        return self.stars[:, 2:5] * scale[None, :]

    def stars_in_sensor(self, light: int | str | ColorLightTruth) -> NDArray[np.void]:
        """Catalogue stars whose centre falls on the sensor in ``light``.

        Returns
        -------
        ndarray
            Structured array (``COLOR_STAR_DTYPE``): ``id`` (row in ``stars``),
            ``x``, ``y`` (sensor pixels), ``flux_r``, ``flux_g``, ``flux_b``
            (rows of :meth:`star_channel_flux_adu`), ``peak_adu`` (analytic
            Moffat peak of the brightest channel, before the flat response),
            ``teff`` (K) and ``reference`` (one of the bright isolated
            reference stars).
        """
        lt = self.light(light)
        x, y = sky.apply_affine(lt.sky_to_sensor, self.stars[:, 0], self.stars[:, 1])
        inside = (x >= -0.5) & (x < self.width - 0.5) & (y >= -0.5) & (y < self.height - 0.5)
        flux = self.star_channel_flux_adu(lt)[inside]
        out = np.zeros(int(inside.sum()), dtype=COLOR_STAR_DTYPE)
        out["id"] = np.flatnonzero(inside)
        out["x"], out["y"] = x[inside], y[inside]
        out["flux_r"], out["flux_g"], out["flux_b"] = flux[:, 0], flux[:, 1], flux[:, 2]
        out["peak_adu"] = sky.moffat_peak(flux.max(axis=1), lt.fwhm, self.psf_beta)
        out["teff"] = self.stars[inside, 5]
        out["reference"] = out["id"] < self.n_reference
        return out

    def reference_stars(self, light: int | str | ColorLightTruth) -> NDArray[np.void]:
        """The rows of :meth:`stars_in_sensor` that are reference stars."""
        stars = self.stars_in_sensor(light)
        return stars[stars["reference"]]

    def clean_background_rgb(self, light: int | str | ColorLightTruth) -> NDArray[np.float64]:
        """Noise-free sky gradient + nebula of ``light``, ``(3, height, width)`` ADU.

        Full resolution in every channel, before the flat response, without bias,
        dark current or cosmic rays (sample it with :meth:`mosaic`).
        """
        lt = self.light(light)
        nebula = sky.render_nebula(self.shape, lt.sensor_to_sky, self.nebula)
        scale = lt.transmission * lt.exposure / self.sensor.gain
        out = np.empty((3, *self.shape))
        for k, channel in enumerate(CHANNELS):
            out[k] = sky.sky_background(
                self.shape, lt.sky_adu[k], lt.sky_gradient[k], lt.sky_gradient_angle
            )
            out[k] += nebula * (self.nebula_rate[channel] * scale)
        return out

    def star_image_rgb(self, light: int | str | ColorLightTruth) -> NDArray[np.float64]:
        """Noise-free stars of ``light``, ``(3, height, width)`` ADU, before the flat."""
        lt = self.light(light)
        x, y = sky.apply_affine(lt.sky_to_sensor, self.stars[:, 0], self.stars[:, 1])
        flux = self.star_channel_flux_adu(lt)
        return np.stack(
            [
                sky.render_stars(self.shape, x, y, flux[:, k], lt.fwhm, self.psf_beta)
                for k in range(3)
            ]
        )

    def clean_sky_rgb(self, light: int | str | ColorLightTruth) -> NDArray[np.float64]:
        """:meth:`clean_background_rgb` + :meth:`star_image_rgb`."""
        return self.clean_background_rgb(light) + self.star_image_rgb(light)

    def expected_raw(self, light: int | str | ColorLightTruth) -> NDArray[np.float64]:
        """Expected raw mosaic ADU of ``light`` (no noise, no cosmic rays, no clipping)."""
        lt = self.light(light)
        image = self.mosaic(self.clean_sky_rgb(lt)) * self.cfa_flat_response()
        image += self.dark_current * (lt.exposure / self.sensor.gain)
        return image + self.bias_pattern

    def save(self, outdir: str | Path) -> Path:
        """Write ``truth.json`` and the ``.npy`` arrays to ``outdir/truth``."""
        arrays = {name: getattr(self, name) for name in _ARRAY_FILES}
        return write_truth_folder(outdir, self._json_dict(), arrays, self.flat_responses)

    def _json_dict(self) -> dict[str, Any]:
        """The JSON-serialisable part (arrays referenced by file name)."""
        data: dict[str, Any] = {"generator": "linearlink sample_data.color"}
        skip = set(_ARRAY_FILES) | {"flat_responses", "root"}
        for f in fields(self):
            if f.name not in skip:
                data[f.name] = _jsonable(getattr(self, f.name))
        data["arrays"] = {name: f"{name}.npy" for name in _ARRAY_FILES}
        data["arrays"]["flat_responses"] = {
            name: f"flat_response_{name}.npy" for name in self.flat_responses
        }
        return data


def load_color_truth(outdir: str | Path) -> ColorNightTruth:
    """Load the truth of a night written by :func:`sample_data.generate_color_night`.

    Parameters
    ----------
    outdir : str or Path
        The night folder (the one containing ``truth/``).

    Returns
    -------
    ColorNightTruth
        The truth, with ``root`` set to ``outdir``.
    """
    root = Path(outdir)
    data, arrays, responses = read_truth_folder(root)

    def frames(key: str) -> tuple[CalibrationFrameTruth, ...]:
        return tuple(CalibrationFrameTruth(**d) for d in data[key])

    return ColorNightTruth(
        version=data["version"],
        seed=data["seed"],
        width=data["width"],
        height=data["height"],
        pattern=data["pattern"],
        psf_beta=data["psf_beta"],
        exposure=data["exposure"],
        sensor=SensorTruth(**data["sensor"]),
        qe=dict(data["qe"]),
        sky_rate=dict(data["sky_rate"]),
        nebula_rate=dict(data["nebula_rate"]),
        flat_level=dict(data["flat_level"]),
        flat_exposure=data["flat_exposure"],
        nebula=tuple(sky.NebulaBlob(**b) for b in data["nebula"]),
        light_frames=tuple(ColorLightTruth.from_dict(d) for d in data["light_frames"]),
        bias_frames=frames("bias_frames"),
        dark_frames=frames("dark_frames"),
        flat_frames=frames("flat_frames"),
        n_reference=data["n_reference"],
        flat_responses=responses,
        root=root,
        **arrays,
    )
