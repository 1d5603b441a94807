"""Ground truth of a synthetic night, its JSON/npy serialisation and helpers.

Coordinate conventions (shared with :mod:`sample_data.sky`): ``x`` is the
column, ``y`` the row, pixel centres at integers (``image[y, x]``). Each light's
``matrix`` is a 3x3 affine ``T`` with ``(x_sensor, y_sensor, 1) = T @ (x_sky, y_sky, 1)``.
"""

from __future__ import annotations

import json
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sample_data import sky

__all__ = [
    "SATURATION_ADU",
    "TRUTH_DIR",
    "CalibrationFrameTruth",
    "FilterTruth",
    "LightTruth",
    "NightTruth",
    "SensorTruth",
    "TrailTruth",
    "load_truth",
    "star_colour_ratio",
]

TRUTH_DIR = "truth"
SATURATION_ADU = 65535.0
"""Raw level at which every light clips (the uint16 ceiling of :func:`sensor.read_out`)."""
STAR_DTYPE = np.dtype(
    [
        ("id", np.int64),
        ("x", np.float64),
        ("y", np.float64),
        ("flux_adu", np.float64),
        ("peak_adu", np.float64),
    ]
)
RGB_STAR_DTYPE = np.dtype(STAR_DTYPE.descr + [("teff", np.float64), ("reference", np.bool_)])
RAW_PEAK_FIELDS = [("raw_peak_adu", np.float64), ("saturated", np.bool_)]
_ARRAY_FILES = ("stars", "hot_pixels", "bias_pattern", "dark_current")
_OMITTED_AT_DEFAULT = frozenset(
    {
        "wavelength_nm",
        "gradient_scale",
        "gradient_turn_deg",
        "n_reference",
        "eccentricity",
        "psf_angle",
        "psf_wing_adu",
        "saturation_adu",
    }
)
"""Fields added after the first mono night (RGB night; elongated PSFs and saturation);
left out of ``truth.json`` at their defaults, so the JSON of the older nights is unchanged
(and older files load with the defaults)."""

Matrix3 = tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class SensorTruth:
    """Camera electrical truth.

    Attributes
    ----------
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise (e- RMS).
    bias_level : float
        Mean bias (ADU); the per-column pattern is in ``NightTruth.bias_pattern``.
    dark_current : float
        Dark current of normal pixels (e-/s).
    """

    gain: float
    read_noise: float
    bias_level: float
    dark_current: float


@dataclass(frozen=True)
class FilterTruth:
    """Per-filter sky, star and flat parameters.

    Attributes
    ----------
    name : str
        Filter name as written in FILTER.
    exposure : float
        Light exposure (s).
    sky_rate : float
        Sky background at frame centre in clear conditions (e-/s/px, before flat).
    star_throughput : float
        Multiplier on the star table's fluxes (stars are tabulated for L, or for a grey
        filter of throughput 1 in nights with star temperatures).
    nebula_rate : float
        Nebula surface brightness scale (e-/s/px per unit blob amplitude).
    flat_level : float
        Mean flat illumination (ADU above bias and dark).
    flat_exposure : float
        Flat exposure (s).
    wavelength_nm : float or None
        Effective wavelength (nm) at which a star's blackbody colour is sampled, one of
        ``sample_data.color.COLOUR_WAVELENGTHS_NM`` (620 R, 530 G, 460 B); None for a
        grey filter (colour ratio 1, e.g. L). Only used when the stars have temperatures.
    gradient_scale : float
        Multiplier on the night's sky-gradient amplitude for this filter.
    gradient_turn_deg : float
        Degrees added to the night's sky-gradient direction for this filter
        (counter-clockwise from +x towards +y, sensor frame).
    """

    name: str
    exposure: float
    sky_rate: float
    star_throughput: float
    nebula_rate: float
    flat_level: float
    flat_exposure: float
    wavelength_nm: float | None = None
    gradient_scale: float = 1.0
    gradient_turn_deg: float = 0.0


@dataclass(frozen=True)
class TrailTruth:
    """A satellite trail: straight line across the whole frame.

    Attributes
    ----------
    x0, y0, x1, y1 : float
        Endpoints on the frame border (sensor pixels).
    amplitude : float
        Peak on the trail axis (ADU, before the flat response).
    sigma : float
        Gaussian sigma across the trail (pixels).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    amplitude: float
    sigma: float

    @property
    def endpoints(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``."""
        return (self.x0, self.y0, self.x1, self.y1)


class LightGeometry:
    """Sky <-> sensor geometry of a light, shared by the mono and colour light truths.

    The using dataclass provides ``matrix`` (3x3 sky -> sensor, nested tuples).
    """

    matrix: Matrix3

    @property
    def sky_to_sensor(self) -> NDArray[np.float64]:
        """The 3x3 sky -> sensor matrix as an array."""
        return np.array(self.matrix, dtype=np.float64)

    @property
    def sensor_to_sky(self) -> NDArray[np.float64]:
        """The inverse, sensor -> sky."""
        return np.linalg.inv(self.sky_to_sensor)

    @property
    def rotation_deg(self) -> float:
        """Field rotation of the sky -> sensor matrix, degrees in (-180, 180]."""
        m = self.matrix
        return float(np.degrees(np.arctan2(m[1][0], m[0][0])))


@dataclass(frozen=True)
class LightTruth(LightGeometry):
    """Truth of one light sub.

    Attributes
    ----------
    index : int
        Position in ``NightTruth.light_frames`` (chronological order).
    filter_index : int
        0-based position among the subs of the same filter (chronological).
    path : str
        Path relative to the night folder (POSIX separators).
    filter : str
        Filter name.
    exposure : float
        Exposure (s).
    date_obs : str
        DATE-OBS written in the header.
    ccd_temp : float
        CCD-TEMP written in the header.
    matrix : tuple
        3x3 sky -> sensor affine matrix (row-major nested tuples).
    fwhm : float
        Moffat FWHM (pixels). For an elliptical PSF the geometric mean
        ``sqrt(fwhm_major * fwhm_minor)`` of the major- and minor-axis FWHMs (see
        :attr:`fwhm_major`, :attr:`fwhm_minor`).
    transmission : float
        Atmospheric transmission applied to stars and nebula.
    sky_adu : float
        Sky level at frame centre (ADU, before the flat response).
    sky_gradient : float
        Fractional sky change from centre to corner along ``sky_gradient_angle``.
    sky_gradient_angle : float
        Direction of increasing sky (radians from +x, sensor frame).
    flipped : bool
        Taken after the meridian flip (field rotated by about 180 degrees).
    cloudy : bool
        Thin cloud: low transmission, brighter sky.
    blurred : bool
        Badly blurred (FWHM x 2.5).
    trail : TrailTruth or None
        Satellite trail, if any.
    cosmic_rays : tuple
        ``(x, y, adu)`` per affected pixel.
    eccentricity : float
        PSF eccentricity ``sqrt(1 - (fwhm_minor / fwhm_major) ** 2)``; 0 (round) by default.
    psf_angle : float
        Position angle of the PSF's major axis on the sensor, radians from +x towards +y,
        in ``[0, pi)`` (0 for a round PSF).
    """

    index: int
    filter_index: int
    path: str
    filter: str
    exposure: float
    date_obs: str
    ccd_temp: float
    matrix: Matrix3
    fwhm: float
    transmission: float
    sky_adu: float
    sky_gradient: float
    sky_gradient_angle: float
    flipped: bool = False
    cloudy: bool = False
    blurred: bool = False
    trail: TrailTruth | None = None
    cosmic_rays: tuple[tuple[int, int, float], ...] = ()
    eccentricity: float = 0.0
    psf_angle: float = 0.0

    @property
    def fwhm_major(self) -> float:
        """FWHM along the PSF's major axis (pixels); ``fwhm`` when round."""
        return sky.psf_axes(self.fwhm, self.eccentricity)[0]

    @property
    def fwhm_minor(self) -> float:
        """FWHM along the PSF's minor axis (pixels); ``fwhm`` when round."""
        return sky.psf_axes(self.fwhm, self.eccentricity)[1]

    @property
    def has_trail(self) -> bool:
        """Whether a satellite trail crosses this light."""
        return self.trail is not None

    @property
    def n_cosmic_ray_pixels(self) -> int:
        """Number of distinct pixels a cosmic ray hit (a pixel hit twice counts once)."""
        return len({(x, y) for x, y, _ in self.cosmic_rays})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LightTruth:
        """Rebuild from the JSON form."""
        data = dict(data)
        data["matrix"] = tuple(tuple(float(v) for v in row) for row in data["matrix"])
        data["trail"] = TrailTruth(**data["trail"]) if data.get("trail") else None
        data["cosmic_rays"] = tuple(
            (int(x), int(y), float(a)) for x, y, a in data.get("cosmic_rays", ())
        )
        return cls(**data)


@dataclass(frozen=True)
class CalibrationFrameTruth:
    """Truth of one bias, dark or flat frame.

    Attributes
    ----------
    path : str
        Path relative to the night folder.
    kind : str
        ``"bias"``, ``"dark"`` or ``"flat"``.
    exposure : float
        Exposure (s).
    date_obs : str
        DATE-OBS written in the header.
    ccd_temp : float
        CCD-TEMP written in the header.
    filter : str or None
        Filter for flats.
    """

    path: str
    kind: str
    exposure: float
    date_obs: str
    ccd_temp: float
    filter: str | None = None


class LightLookup:
    """Light lookup and sub-to-sub geometry shared by the mono and colour truths.

    The using dataclass provides ``light_frames`` (each with ``path``, ``sky_to_sensor`` and
    ``sensor_to_sky``) and ``root``.
    """

    def light(self, light: Any) -> Any:
        """Look a light up by global index, relative path, or pass one through."""
        if isinstance(light, str):
            for candidate in self.light_frames:
                if candidate.path == light:
                    return candidate
            raise KeyError(f"no light with path {light!r}")
        if isinstance(light, int | np.integer):
            return self.light_frames[light]
        return light

    def sub_to_sub_matrix(self, i: Any, j: Any) -> NDArray[np.float64]:
        """Matrix mapping sensor pixels of light ``i`` to sensor pixels of light ``j``.

        Returns
        -------
        ndarray
            ``T_j @ inv(T_i)``.
        """
        return self.light(j).sky_to_sensor @ self.light(i).sensor_to_sky

    def path(self, relative: str) -> Path:
        """Absolute path of a frame given its relative path."""
        if self.root is None:
            raise ValueError("this truth has no root folder")
        return self.root / relative


@dataclass(frozen=True, eq=False)
class NightTruth(LightLookup):
    """Everything that went into a synthetic night.

    Attributes
    ----------
    version : str
        Generator version.
    seed : int or None
        Seed used (None when the caller passed its own generator).
    width, height : int
        Sensor size.
    psf_beta : float
        Moffat beta of every sub.
    sensor : SensorTruth
        Electrical truth.
    filters : dict
        ``name -> FilterTruth``.
    nebula : tuple of NebulaBlob
        Nebula components (sky coordinates).
    light_frames : tuple of LightTruth
        Lights in chronological order.
    bias_frames, dark_frames, flat_frames : tuple of CalibrationFrameTruth
        Calibration frames.
    stars : ndarray
        ``(n, 3)``: sky ``x, y`` and L-band flux (e-/s) at transmission 1; or ``(n, 4)``
        in nights with star colours (:func:`sample_data.generate_rgb_night`): sky
        ``x, y``, the flux (e-/s) through a grey filter of throughput 1, and the
        effective temperature (K). A filter then sees ``flux * star_throughput *``
        :meth:`star_colour` (blackbody photon ratio, 1 at 6500 K in every filter).
    hot_pixels : ndarray
        ``(n, 3)``: sensor ``x, y`` and dark rate (e-/s), brightest first.
    bias_pattern : ndarray
        Expected bias frame (ADU): ``bias_level`` plus the per-column pattern.
    dark_current : ndarray
        Dark current per pixel (e-/s), hot pixels included.
    flat_responses : dict
        ``filter -> (height, width)`` multiplicative response, mean 1
        (vignetting x dust x PRNU).
    root : Path or None
        Folder the night was written to / loaded from.
    n_reference : int
        The first ``n_reference`` rows of ``stars`` are reference stars: bright but
        unsaturated, isolated, well inside every sub, with a spread of temperatures
        (0 in nights without star colours).
    psf_wing_adu : float or None
        When set, stars are rendered on stamps grown until their wings fall below this
        many ADU (``wing_limit`` of :func:`sky.render_stars`): nights whose brightest
        stars saturate. None: the fixed stamp radius of the older nights.
    saturation_adu : float or None
        Raw level at which the lights clip, recorded (and written as ``SATURATE`` in the
        light headers) in nights whose bright stars saturate; None in the older nights,
        whose sensor clips at the same :data:`SATURATION_ADU` but whose stars stay below it.
    """

    version: str
    seed: int | None
    width: int
    height: int
    psf_beta: float
    sensor: SensorTruth
    filters: dict[str, FilterTruth]
    nebula: tuple[sky.NebulaBlob, ...]
    light_frames: tuple[LightTruth, ...]
    bias_frames: tuple[CalibrationFrameTruth, ...]
    dark_frames: tuple[CalibrationFrameTruth, ...]
    flat_frames: tuple[CalibrationFrameTruth, ...]
    stars: NDArray[np.float64] = field(repr=False)
    hot_pixels: NDArray[np.float64] = field(repr=False)
    bias_pattern: NDArray[np.float32] = field(repr=False)
    dark_current: NDArray[np.float32] = field(repr=False)
    flat_responses: dict[str, NDArray[np.float32]] = field(repr=False)
    root: Path | None = None
    n_reference: int = 0
    psf_wing_adu: float | None = None
    saturation_adu: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def has_star_colours(self) -> bool:
        """True when ``stars`` carries effective temperatures (4th column)."""
        return self.stars.shape[1] > 3

    def star_colour(self, filter: str) -> NDArray[np.float64]:
        """Colour factor of every catalogue star in ``filter`` (dimensionless).

        Blackbody photon ratio at the filter's ``wavelength_nm`` relative to 530 nm,
        normalised to 1 for a 6500 K star (see :func:`star_colour_ratio`); all ones for
        a grey filter or a night without star temperatures.

        Returns
        -------
        ndarray
            ``(n,)`` factors, one per row of ``stars``.
        """
        wavelength = self.filters[filter].wavelength_nm
        if not self.has_star_colours or wavelength is None:
            return np.ones(len(self.stars))
        return star_colour_ratio(self.stars[:, 3], wavelength)

    def lights(self, filter: str | None = None) -> tuple[LightTruth, ...]:
        """Lights of one filter (all when ``filter`` is None), chronological."""
        return tuple(lt for lt in self.light_frames if filter is None or lt.filter == filter)

    def flat_response(self, filter: str) -> NDArray[np.float32]:
        """The mean-1 multiplicative flat response of ``filter``."""
        return self.flat_responses[filter]

    def star_flux_adu(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Total flux of every catalogue star in ``light`` (ADU, before the flat)."""
        lt = self.light(light)
        filt = self.filters[lt.filter]
        scale = filt.star_throughput * lt.transmission * lt.exposure / self.sensor.gain
        flux = self.stars[:, 2] * scale
        if self.has_star_colours:
            flux = flux * self.star_colour(lt.filter)
        return flux

    def stars_in_sensor(self, light: int | str | LightTruth) -> NDArray[np.void]:
        """Catalogue stars whose centre falls on the sensor in ``light``.

        Returns
        -------
        ndarray
            Structured array with fields ``id`` (row in ``stars``), ``x``, ``y``
            (sensor pixels), ``flux_adu`` (total flux, ADU, before the flat response,
            i.e. as seen after flat-fielding with a mean-normalised flat; in nights with
            star colours it includes the star's colour in this light's filter) and
            ``peak_adu`` (analytic Moffat peak of the same). Nights with star colours
            (``RGB_STAR_DTYPE``) add ``teff`` (K) and ``reference`` (bool).
        """
        lt = self.light(light)
        x, y = sky.apply_affine(lt.sky_to_sensor, self.stars[:, 0], self.stars[:, 1])
        inside = (x >= -0.5) & (x < self.width - 0.5) & (y >= -0.5) & (y < self.height - 0.5)
        flux = self.star_flux_adu(lt)
        dtype = RGB_STAR_DTYPE if self.has_star_colours else STAR_DTYPE
        out = np.zeros(int(inside.sum()), dtype=dtype)
        out["id"] = np.flatnonzero(inside)
        out["x"], out["y"], out["flux_adu"] = x[inside], y[inside], flux[inside]
        out["peak_adu"] = sky.moffat_peak(flux[inside], lt.fwhm, self.psf_beta)
        if self.has_star_colours:
            out["teff"] = self.stars[inside, 3]
            out["reference"] = out["id"] < self.n_reference
        return out

    def reference_stars(self, light: int | str | LightTruth) -> NDArray[np.void]:
        """The reference stars of ``light`` (:meth:`stars_in_sensor` rows with ``reference``).

        Empty (old dtype) in nights without star colours.
        """
        stars = self.stars_in_sensor(light)
        if not self.has_star_colours:
            return stars[:0]
        return stars[stars["reference"]]

    @property
    def clip_adu(self) -> float:
        """Raw level at which lights clip: ``saturation_adu``, else :data:`SATURATION_ADU`."""
        return SATURATION_ADU if self.saturation_adu is None else self.saturation_adu

    def stars_with_raw_peaks(self, light: int | str | LightTruth) -> NDArray[np.void]:
        """:meth:`stars_in_sensor` plus each star's expected raw peak and whether it saturates.

        ``raw_peak_adu`` is the largest value of the noise-free :meth:`expected_raw` frame
        (stars, sky, nebula, trail, flat response, dark current and bias; no noise, no
        cosmic rays, no clipping) in the 3x3 pixels around the star's centre, so it also
        counts light from close neighbours. ``saturated`` is ``raw_peak_adu >=``
        :attr:`clip_adu`: the star's core is clipped in the raw file (up to the noise of
        pixels right at the level).

        Returns
        -------
        ndarray
            Structured array: the fields of :meth:`stars_in_sensor` plus ``raw_peak_adu``
            (float) and ``saturated`` (bool).
        """
        lt = self.light(light)
        stars = self.stars_in_sensor(lt)
        dtype = np.dtype(stars.dtype.descr + RAW_PEAK_FIELDS)
        out = np.zeros(stars.size, dtype=dtype)
        for name in stars.dtype.names or ():
            out[name] = stars[name]
        raw = self.expected_raw(lt)
        ix = np.clip(np.rint(stars["x"]).astype(np.int64), 0, self.width - 1)
        iy = np.clip(np.rint(stars["y"]).astype(np.int64), 0, self.height - 1)
        peak = np.full(stars.size, -np.inf)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                rows = np.clip(iy + dy, 0, self.height - 1)
                cols = np.clip(ix + dx, 0, self.width - 1)
                peak = np.maximum(peak, raw[rows, cols])
        out["raw_peak_adu"] = peak
        out["saturated"] = peak >= self.clip_adu
        return out

    def trail_mask(
        self, light: int | str | LightTruth, *, min_adu: float = 1.0
    ) -> NDArray[np.bool_]:
        """Pixels where the trail of ``light`` adds at least ``min_adu`` (ADU, before the flat).

        All False when the light has no trail.
        """
        return self.trail_image(light) >= min_adu

    def light_summary(
        self, light: int | str | LightTruth, *, trail_min_adu: float = 1.0
    ) -> dict[str, Any]:
        """What a benchmark needs to know about one light, as a JSON-able dict.

        Keys: ``index``, ``path``, ``filter``, ``fwhm`` (geometric mean of the axis FWHMs),
        ``fwhm_major``, ``fwhm_minor``, ``eccentricity``, ``psf_angle_deg``,
        ``transmission``, ``cloudy``, ``blurred``, ``trail`` (bool),
        ``n_cosmic_ray_pixels`` (distinct pixels hit), ``n_trail_pixels`` (pixels of
        :meth:`trail_mask` at ``trail_min_adu``) and ``saturation_adu`` (:attr:`clip_adu`).
        """
        lt = self.light(light)
        return {
            "index": lt.index,
            "path": lt.path,
            "filter": lt.filter,
            "fwhm": lt.fwhm,
            "fwhm_major": lt.fwhm_major,
            "fwhm_minor": lt.fwhm_minor,
            "eccentricity": lt.eccentricity,
            "psf_angle_deg": float(np.degrees(lt.psf_angle)),
            "transmission": lt.transmission,
            "cloudy": lt.cloudy,
            "blurred": lt.blurred,
            "trail": lt.has_trail,
            "n_cosmic_ray_pixels": lt.n_cosmic_ray_pixels,
            "n_trail_pixels": int(self.trail_mask(lt, min_adu=trail_min_adu).sum())
            if lt.has_trail
            else 0,
            "saturation_adu": self.clip_adu,
        }

    def clean_background(
        self, light: int | str | LightTruth, *, trail: bool = True
    ) -> NDArray[np.float64]:
        """Noise-free sky gradient + nebula + trail of ``light`` in ADU (no stars).

        Before the flat response, without bias, dark current or cosmic rays. With
        ``trail=False`` the satellite trail (if any) is left out.
        """
        lt = self.light(light)
        image = self.sky_gradient_image(lt) + self.nebula_image(lt)
        if trail and lt.trail is not None:
            image += self.trail_image(lt)
        return image

    def sky_gradient_image(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Noise-free sky level plus linear gradient of ``light`` in ADU (no nebula, no stars).

        ``sky_adu * (1 + sky_gradient * ramp)``, with ``ramp`` the distance from the frame
        centre along ``sky_gradient_angle`` over the half diagonal; before the flat
        response, without bias or dark current.
        """
        lt = self.light(light)
        return sky.sky_background(self.shape, lt.sky_adu, lt.sky_gradient, lt.sky_gradient_angle)

    def nebula_image(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Noise-free nebula of ``light`` in ADU (its filter's ``nebula_rate``), before the flat."""
        lt = self.light(light)
        filt = self.filters[lt.filter]
        nebula = sky.render_nebula(self.shape, lt.sensor_to_sky, self.nebula)
        return nebula * (filt.nebula_rate * lt.transmission * lt.exposure / self.sensor.gain)

    def trail_image(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Noise-free satellite trail of ``light`` in ADU, before the flat response.

        All zeros when the light has no trail.
        """
        lt = self.light(light)
        if lt.trail is None:
            return np.zeros(self.shape, dtype=np.float64)
        return sky.render_trail(self.shape, lt.trail.endpoints, lt.trail.amplitude, lt.trail.sigma)

    def star_image(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Noise-free stars of ``light`` in ADU, before the flat response."""
        lt = self.light(light)
        x, y = sky.apply_affine(lt.sky_to_sensor, self.stars[:, 0], self.stars[:, 1])
        return sky.render_stars(
            self.shape,
            x,
            y,
            self.star_flux_adu(lt),
            lt.fwhm,
            self.psf_beta,
            eccentricity=lt.eccentricity,
            theta=lt.psf_angle,
            wing_limit=self.psf_wing_adu,
        )

    def clean_sky(
        self, light: int | str | LightTruth, *, trail: bool = True
    ) -> NDArray[np.float64]:
        """Noise-free sky + nebula + stars + trail of ``light`` in ADU.

        Before the flat response, without bias, dark current or cosmic rays; the
        sum of :meth:`clean_background` and :meth:`star_image`. With ``trail=False``
        the satellite trail (if any) is left out.
        """
        return self.clean_background(light, trail=trail) + self.star_image(light)

    def expected_raw(self, light: int | str | LightTruth) -> NDArray[np.float64]:
        """Expected raw ADU of ``light`` (no noise, no cosmic rays, no clipping)."""
        lt = self.light(light)
        image = self.clean_sky(lt) * self.flat_responses[lt.filter]
        image += self.dark_current * (lt.exposure / self.sensor.gain)
        return image + self.bias_pattern

    def save(self, outdir: str | Path) -> Path:
        """Write ``truth.json`` and the ``.npy`` arrays to ``outdir/truth``."""
        arrays = {name: getattr(self, name) for name in _ARRAY_FILES}
        return write_truth_folder(outdir, self._json_dict(), arrays, self.flat_responses)

    def _json_dict(self) -> dict[str, Any]:
        """The JSON-serialisable part (arrays referenced by file name)."""
        data: dict[str, Any] = {"generator": "linearlink sample_data.night"}
        skip = set(_ARRAY_FILES) | {"flat_responses", "root"}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in skip and not _omitted(f, value):
                data[f.name] = _jsonable(value)
        data["arrays"] = {name: f"{name}.npy" for name in _ARRAY_FILES}
        data["arrays"]["flat_responses"] = {
            name: f"flat_response_{name}.npy" for name in self.flat_responses
        }
        return data


def _omitted(f: Field[Any], value: Any) -> bool:
    """Whether field ``f`` holding ``value`` stays out of the JSON (``_OMITTED_AT_DEFAULT``)."""
    return f.name in _OMITTED_AT_DEFAULT and value == f.default


def _jsonable(value: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, recursively."""
    if hasattr(value, "__dataclass_fields__"):
        data = asdict(value)
        for f in fields(value):
            if _omitted(f, data[f.name]):
                del data[f.name]
        return data
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _readonly(array: NDArray[Any]) -> NDArray[Any]:
    """Mark an array read-only (the truth is frozen)."""
    array.setflags(write=False)
    return array


def load_truth(outdir: str | Path) -> NightTruth:
    """Load the truth of a night written by :func:`sample_data.generate_night`.

    Parameters
    ----------
    outdir : str or Path
        The night folder (the one containing ``truth/``).

    Returns
    -------
    NightTruth
        The truth, with ``root`` set to ``outdir``.
    """
    root = Path(outdir)
    data, arrays, responses = read_truth_folder(root)
    return NightTruth(
        version=data["version"],
        seed=data["seed"],
        width=data["width"],
        height=data["height"],
        psf_beta=data["psf_beta"],
        sensor=SensorTruth(**data["sensor"]),
        filters={k: FilterTruth(**v) for k, v in data["filters"].items()},
        nebula=tuple(sky.NebulaBlob(**b) for b in data["nebula"]),
        light_frames=tuple(LightTruth.from_dict(d) for d in data["light_frames"]),
        bias_frames=tuple(CalibrationFrameTruth(**d) for d in data["bias_frames"]),
        dark_frames=tuple(CalibrationFrameTruth(**d) for d in data["dark_frames"]),
        flat_frames=tuple(CalibrationFrameTruth(**d) for d in data["flat_frames"]),
        flat_responses=responses,
        root=root,
        n_reference=data.get("n_reference", 0),
        psf_wing_adu=data.get("psf_wing_adu"),
        saturation_adu=data.get("saturation_adu"),
        **arrays,
    )


def write_truth_folder(
    outdir: str | Path,
    data: dict[str, Any],
    arrays: dict[str, NDArray[Any]],
    flat_responses: dict[str, NDArray[Any]],
) -> Path:
    """Write ``truth.json`` and the ``.npy`` arrays to ``outdir/truth``; returns the JSON path."""
    folder = Path(outdir) / TRUTH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    for name, response in flat_responses.items():
        np.save(folder / f"flat_response_{name}.npy", response)
    path = folder / "truth.json"
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def read_truth_folder(
    root: Path,
) -> tuple[dict[str, Any], dict[str, NDArray[Any]], dict[str, NDArray[Any]]]:
    """Read ``root/truth``: the JSON data, the named arrays and the flat responses (read-only)."""
    folder = root / TRUTH_DIR
    data = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    arrays = {
        name: _readonly(np.load(folder / file))
        for name, file in data["arrays"].items()
        if name != "flat_responses"
    }
    responses = {
        name: _readonly(np.load(folder / file))
        for name, file in data["arrays"]["flat_responses"].items()
    }
    return data, arrays, responses


def star_colour_ratio(teff: NDArray[np.float64], wavelength_nm: float) -> NDArray[np.float64]:
    """Blackbody photon-rate ratio of stars at ``wavelength_nm``, neutral at 6500 K.

    The ratio of a Planck photon spectrum at ``wavelength_nm`` to the same at 530 nm,
    divided by that of a 6500 K star and clipped to ``COLOUR_RATIO_RANGE`` -- one column
    of :func:`sample_data.color.colour_ratios`, which does the maths.

    Parameters
    ----------
    teff : ndarray
        Effective temperatures (K).
    wavelength_nm : float
        One of ``sample_data.color.COLOUR_WAVELENGTHS_NM`` (620, 530 or 460 nm).

    Returns
    -------
    ndarray
        ``(n,)`` ratios; exactly 1 at 6500 K and at 530 nm.

    Raises
    ------
    ValueError
        If ``wavelength_nm`` is not one of the supported wavelengths.
    """
    # Imported here: sample_data.color imports this module (through sample_data.night).
    from sample_data.color import COLOUR_WAVELENGTHS_NM, colour_ratios

    if wavelength_nm not in COLOUR_WAVELENGTHS_NM:
        raise ValueError(
            f"wavelength_nm must be one of {COLOUR_WAVELENGTHS_NM}, got {wavelength_nm!r}"
        )
    return colour_ratios(np.asarray(teff, dtype=np.float64))[
        :, COLOUR_WAVELENGTHS_NM.index(wavelength_nm)
    ]
