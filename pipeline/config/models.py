"""Configuration models: one frozen pydantic model per stage.

The YAML file maps one-to-one onto :class:`PipelineConfig`; every section is a stage's model.
Methods with parameters are discriminated unions keyed by ``method`` (for example
``rejection: {method: sigma_clip, low: 4, high: 3}``), never on/off flag sets.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BackgroundExtractionConfig",
    "CalibrationConfig",
    "ColourCalibrationConfig",
    "CombineConfig",
    "CosmeticCorrectionConfig",
    "DebayerConfig",
    "DiscoveryConfig",
    "EngineConfig",
    "IntegrationConfig",
    "LinearFitConfig",
    "MasterStackConfig",
    "MeasurementConfig",
    "MinMaxRejection",
    "NoRejection",
    "NormalizationConfig",
    "PinnedMasters",
    "PipelineConfig",
    "PreviewConfig",
    "RegistrationConfig",
    "SelectionConfig",
    "Weighting",
    "WeightingConfig",
    "Rejection",
    "SigmaClipRejection",
    "WinsorizedSigmaRejection",
]


class _Section(BaseModel):
    """Base of every configuration model: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- rejection methods
class NoRejection(_Section):
    """Keep every pixel."""

    method: Literal["none"] = "none"


class SigmaClipRejection(_Section):
    """Iterative sigma clipping around the median (PixInsight semantics)."""

    method: Literal["sigma_clip"] = "sigma_clip"
    low: float = Field(4.0, gt=0, description="Reject pixels this many sigma below the median.")
    high: float = Field(3.0, gt=0, description="Reject pixels this many sigma above the median.")
    max_iterations: int = Field(10, ge=1, le=100, description="Stop after this many passes.")


class WinsorizedSigmaRejection(_Section):
    """Winsorized sigma clipping: robust sigma from a winsorized sample, then clip."""

    method: Literal["winsorized_sigma"] = "winsorized_sigma"
    low: float = Field(4.0, gt=0, description="Reject pixels this many sigma below the median.")
    high: float = Field(3.0, gt=0, description="Reject pixels this many sigma above the median.")
    max_iterations: int = Field(10, ge=1, le=100, description="Stop after this many passes.")


class MinMaxRejection(_Section):
    """Reject the n lowest and n highest values of every pixel stack."""

    method: Literal["minmax"] = "minmax"
    n_low: int = Field(1, ge=0, description="Number of lowest values rejected per pixel.")
    n_high: int = Field(1, ge=0, description="Number of highest values rejected per pixel.")


class PercentileRejection(_Section):
    """Reject pixels deviating from the median by more than a fraction of it (few subs)."""

    method: Literal["percentile_clip"] = "percentile_clip"
    low: float = Field(0.2, gt=0, description="Reject below median x (1 - low).")
    high: float = Field(0.1, gt=0, description="Reject above median x (1 + high).")


class AveragedSigmaRejection(_Section):
    """Averaged sigma clipping: sigma from a Poisson-like model of the stack."""

    method: Literal["averaged_sigma"] = "averaged_sigma"
    low: float = Field(4.0, gt=0, description="Reject pixels this many sigma below the median.")
    high: float = Field(3.0, gt=0, description="Reject pixels this many sigma above the median.")
    max_iterations: int = Field(10, ge=1, le=100, description="Stop after this many passes.")


class LinearFitRejection(_Section):
    """Linear-fit clipping: distance to a line fitted to the sorted stack (many subs)."""

    method: Literal["linear_fit"] = "linear_fit"
    low: float = Field(5.0, gt=0, description="Reject this many sigma below the fitted line.")
    high: float = Field(2.5, gt=0, description="Reject this many sigma above the fitted line.")
    max_iterations: int = Field(10, ge=1, le=100, description="Stop after this many passes.")


class ESDRejection(_Section):
    """Generalized extreme Studentized deviate test (Rosner 1983), PixInsight's variant."""

    method: Literal["esd"] = "esd"
    outlier_fraction: float = Field(0.3, gt=0, lt=1, description="Most outliers tested, fraction.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level.")
    low_relaxation: float = Field(1.5, ge=1, description="Tolerance factor for low outliers.")


class AutoRejection(_Section):
    """WBPP's automatic choice by number of subs (percentile, winsorized sigma, linear fit)."""

    method: Literal["auto"] = "auto"


Rejection = Annotated[
    NoRejection
    | SigmaClipRejection
    | WinsorizedSigmaRejection
    | MinMaxRejection
    | PercentileRejection
    | AveragedSigmaRejection
    | LinearFitRejection
    | ESDRejection
    | AutoRejection,
    Field(discriminator="method"),
]


# --------------------------------------------------------------------------- stage sections
class DiscoveryConfig(_Section):
    """How frames are found, classified and grouped."""

    recursive: bool = Field(True, description="Scan sub-folders too.")
    extensions: tuple[str, ...] = Field(
        (".fit", ".fits", ".fts"), description="File name endings treated as FITS (any case)."
    )
    light_exposure_tolerance: float = Field(
        2.0, ge=0, description="Lights whose exposures differ by at most this (s) share a group."
    )
    dark_exposure_tolerance: float = Field(
        10.0, ge=0, description="Darks whose exposures differ by at most this (s) share a group."
    )
    group_keywords: tuple[Literal["gain", "offset", "temperature", "night"], ...] = Field(
        (),
        description="Extra header properties that split groups (gain, offset, temperature, night).",
    )
    temperature_tolerance: float = Field(
        2.0, ge=0, description="Sensor temperatures within this (deg C) count as equal."
    )


class MasterStackConfig(_Section):
    """How one kind of master calibration frame is stacked."""

    rejection: Rejection = Field(
        default_factory=WinsorizedSigmaRejection, description="Pixel rejection while stacking."
    )


class PinnedMasters(_Section):
    """Master calibration files to use instead of choosing one (paths; unset = automatic)."""

    bias: str | None = Field(None, description="Master bias FITS to use for every light group.")
    dark: str | None = Field(None, description="Master dark FITS (bias included) for every group.")
    flat: str | None = Field(None, description="Master flat FITS for every light group.")
    dark_flat: str | None = Field(None, description="Master dark-flat FITS for every flat.")


class CosmeticCorrectionConfig(_Section):
    """Hot and cold pixels found in the master dark (and optionally the lights) and replaced."""

    enabled: bool = Field(True, description="Find defects in the master dark and correct them.")
    hot_sigma: float = Field(3.0, gt=0, description="Hot pixel threshold in robust sigmas.")
    cold_sigma: float = Field(3.0, gt=0, description="Cold pixel threshold in robust sigmas.")
    from_lights: bool = Field(False, description="Also find isolated hot pixels in each light.")
    lights_sigma: float = Field(10.0, gt=0, description="Threshold for defects found in lights.")


class CalibrationConfig(_Section):
    """Master calibration frames and how lights are calibrated."""

    bias: MasterStackConfig = Field(default_factory=MasterStackConfig)
    dark: MasterStackConfig = Field(default_factory=MasterStackConfig)
    flat: MasterStackConfig = Field(default_factory=MasterStackConfig)
    dark_flat: MasterStackConfig = Field(default_factory=MasterStackConfig)
    library: str | None = Field(
        None, description="Folder of master calibration files searched besides the night folder."
    )
    masters: PinnedMasters = Field(default_factory=PinnedMasters)
    dark_scaling: bool = Field(
        True,
        description="Scale a bias-subtracted dark by exposure when no dark matches the lights.",
    )
    dark_optimization: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Per-sub dark scale minimising noise; auto: only where the dark is scaled.",
    )
    cosmetic_correction: CosmeticCorrectionConfig = Field(default_factory=CosmeticCorrectionConfig)
    flat_min: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Flat pixels below this fraction of the flat's median become no-data.",
    )
    pedestal: float = Field(0.0, ge=0, description="Constant (ADU) added after calibration.")


class DebayerConfig(_Section):
    """One-shot-colour (Bayer) frames: calibrated as mosaics, then debayered to RGB."""

    pattern: Literal["auto", "RGGB", "BGGR", "GRBG", "GBRG"] = Field(
        "auto", description="CFA pattern; auto reads BAYERPAT/XBAYROFF/YBAYROFF/ROWORDER."
    )
    method: Literal["vng", "bilinear", "superpixel"] = Field(
        "vng", description="Demosaicing method."
    )


class MeasurementConfig(_Section):
    """Star detection and per-sub statistics."""

    detection_sigma: float = Field(5.0, gt=0, description="Detection threshold in noise sigmas.")
    min_area: int = Field(5, ge=1, description="Minimum connected pixels of a star.")
    max_stars: int = Field(
        1000,
        ge=10,
        description="Brightest stars kept per sub for registration and photometry: deep "
        "enough that hundreds are unsaturated in every sub (a sharp sub saturates hundreds "
        "of the brightest).",
    )
    psf_stars: int = Field(
        60,
        ge=5,
        description="Stars fitted with a Moffat PSF (FWHM, eccentricity, weights): the best "
        "exposed unsaturated isolated ones, spread over the field.",
    )
    psf_min_peak_sigma: float = Field(
        10.0, gt=0, description="Faintest peak (noise sigmas) of a star used for PSF fits."
    )
    max_peak_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Stars peaking above this fraction of the saturation level (SATURATE/"
        "DATAMAX, the bit depth or the frame's own clipping, after calibration) count as "
        "saturated: left out of PSF fits, photometry and registration.",
    )


class RegistrationConfig(_Section):
    """Aligning every sub to the reference sub."""

    reference: str = Field(
        "auto", description="'auto' (best-weighted sub) or a light file name to use as reference."
    )
    transform: Literal["similarity", "affine", "homography"] = Field(
        "similarity", description="Geometric model fitted to matched stars."
    )
    interpolation: Literal["lanczos3", "bicubic", "bilinear"] = Field(
        "lanczos3", description="Resampling kernel."
    )
    max_control_points: int = Field(
        50, ge=5, description="Brightest stars used for triangle matching."
    )
    match_radius: float = Field(
        2.0, gt=0, description="Stars closer than this (px) after alignment count as matched."
    )


class LocalNormalizationConfig(_Section):
    """PixInsight-style local normalization: per-sub smooth background model + global scale."""

    scale: int = Field(
        1024, ge=32, description="Smallest structure size (px) the background model follows."
    )
    reference_subs: int = Field(
        20, ge=1, description="The LN reference integrates this many best-weighted subs."
    )


class NormalizationConfig(_Section):
    """Normalization of registered subs before rejection and averaging."""

    method: Literal["additive_scaling", "additive", "multiplicative", "none"] = Field(
        "additive_scaling",
        description="How each sub's level and scale are matched to the reference.",
    )
    scale: Literal["photometric", "dispersion"] = Field(
        "photometric",
        description="Scale of additive_scaling: photometric (matched-star flux ratio, one "
        "for all channels) or dispersion (MAD of each channel, as PixInsight's default).",
    )
    local: LocalNormalizationConfig | None = Field(
        default_factory=LocalNormalizationConfig,
        description="Local normalization (matches gradients sub to sub); null to turn off.",
    )


class PSFSignalWeighting(_Section):
    """PixInsight's PSF Signal Weight: star signal from PSF fits against the noise."""

    method: Literal["psf_signal"] = "psf_signal"


class PSFSNRWeighting(_Section):
    """PixInsight's PSF SNR."""

    method: Literal["psf_snr"] = "psf_snr"


class ApertureSNRWeighting(_Section):
    """Weights that maximise the SNR of stars measured in a fixed aperture of the master.

    A sub's stars put ``T f`` of their light into an aperture of ``aperture`` times the group's
    median FWHM (``T`` its transparency from matched-star photometry, ``f`` the fraction of
    its Moffat PSF inside that radius), against a normalized noise variance ``sigma^2 / T^2``:
    the inverse-variance-optimal weight is ``T^2 f / sigma^2``. Sharper subs weigh more, by as
    much as their stars gain in the aperture.
    """

    method: Literal["aperture_snr"] = "aperture_snr"
    aperture: float = Field(
        1.5, gt=0, le=10, description="Aperture radius in units of the group's median FWHM."
    )


class SNRWeighting(_Section):
    """Signal-to-noise ratio of the sub."""

    method: Literal["snr"] = "snr"


class NoiseWeighting(_Section):
    """Inverse noise variance after normalization (1/sigma^2)."""

    method: Literal["noise"] = "noise"


class StarCountWeighting(_Section):
    """Number of detected stars."""

    method: Literal["star_count"] = "star_count"


class FormulaWeighting(_Section):
    """WBPP's formula: FWHM, eccentricity and SNR terms scaled over the subs, plus a pedestal."""

    method: Literal["formula"] = "formula"
    fwhm: float = Field(5.0, ge=0, description="Weight of the (inverted) FWHM term.")
    eccentricity: float = Field(
        10.0, ge=0, description="Weight of the (inverted) eccentricity term."
    )
    snr: float = Field(20.0, ge=0, description="Weight of the SNR term.")
    pedestal: float = Field(65.0, ge=0, description="Constant added to every weight.")


class EqualWeighting(_Section):
    """Every sub weighs the same."""

    method: Literal["none"] = "none"


Weighting = Annotated[
    ApertureSNRWeighting
    | PSFSignalWeighting
    | PSFSNRWeighting
    | SNRWeighting
    | NoiseWeighting
    | StarCountWeighting
    | FormulaWeighting
    | EqualWeighting,
    Field(discriminator="method"),
]


class WeightingConfig(_Section):
    """How each sub's integration weight is computed."""

    weights: Weighting = Field(
        default_factory=ApertureSNRWeighting,
        description="Weighting method and its parameters (the registration reference is "
        "always the kept sub with the best PSF Signal Weight).",
    )


class SelectionConfig(_Section):
    """Rules that exclude subs before integration (null switches a rule off)."""

    max_fwhm_ratio: float | None = Field(
        1.5, gt=1, description="Exclude subs whose FWHM exceeds this times the group median."
    )
    max_eccentricity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Exclude subs whose median star eccentricity exceeds this absolute bound.",
    )
    eccentricity_sigma: float | None = Field(
        4.0,
        gt=0,
        description="Exclude subs whose eccentricity exceeds the group median by this many "
        "robust sigmas (1.4826 MAD of the group, at least 0.05): judged against the night.",
    )
    min_star_ratio: float | None = Field(
        0.3, gt=0, lt=1, description="Exclude subs with fewer stars than this times the median."
    )
    min_weight: float | None = Field(
        None, gt=0, lt=1, description="Exclude subs whose weight (best = 1) is below this."
    )


class LargeScaleRejection(_Section):
    """Grow high rejections of bright structures (trails, large cosmic-ray clusters) into their
    faint edges, sub by sub."""

    growth: int = Field(
        2, ge=1, le=16, description="Pixels around a rejected structure rejected as well."
    )
    min_pixels: int = Field(
        10,
        ge=1,
        description="Rejected pixels in a pixel's (2 growth + 1)^2 neighbourhood that make "
        "it part of a structure: 10 of 25 is a band two pixels wide; noise rejections and "
        "single cosmic-ray hits never grow.",
    )

    @model_validator(mode="after")
    def _reachable(self) -> LargeScaleRejection:
        box = (2 * self.growth + 1) ** 2
        if self.min_pixels > box:
            raise ValueError(
                f"min_pixels {self.min_pixels} exceeds the {box} pixels of the "
                f"(2 growth + 1)^2 neighbourhood for growth {self.growth}: nothing would grow; "
                f"lower min_pixels or raise growth"
            )
        return self


class PsfMatchedRejection(_Section):
    """Judge each sub's pixels after taking off its seeing difference from the stack.

    A blurrier sub's stars are lower in the core and higher in the wings than the stack, by
    many sigmas for bright stars; a per-pixel test would reject those wings. Each sub's
    difference from the stack is modelled as ``sum_k c_k (G_k * S - S)`` (``S`` the stack's
    sources, ``G_k`` Gaussians; difference imaging after Alard & Lupton 1998), ``c_k``
    fitted per sub, and rejection tests what the model does not explain."""

    blur_fwhm: tuple[float, ...] = Field(
        (0.35, 0.85),
        min_length=1,
        max_length=4,
        description="Widths (sigma) of the model's Gaussians, in units of the subs' median "
        "FWHM: one for the core, one for the wings.",
    )

    @field_validator("blur_fwhm")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < v <= 5 for v in value):
            raise ValueError(f"blur_fwhm {list(value)}: each width must be > 0 and <= 5 (x FWHM)")
        return value


class IntegrationMaps(_Section):
    """Per-pixel maps written as extensions of the master (FITS HDUs)."""

    count: bool = Field(True, description="COUNT: subs contributing to each pixel.")
    rejection: bool = Field(True, description="REJLOW / REJHIGH: pixels rejected low / high.")
    noise: bool = Field(False, description="NOISE: noise estimate of the master per pixel.")


class IntegrationConfig(_Section):
    """Stacking registered subs into the master light."""

    rejection: Rejection = Field(
        default_factory=AutoRejection,
        description="Pixel rejection method (auto: WBPP's choice by number of subs).",
    )
    large_scale_rejection: LargeScaleRejection | None = Field(
        default_factory=lambda: LargeScaleRejection(),
        description="Also reject the faint edges of rejected trails; null to turn off.",
    )
    psf_matched_rejection: PsfMatchedRejection | None = Field(
        default_factory=lambda: PsfMatchedRejection(),
        description="Test pixels after each sub's modelled seeing difference from the stack "
        "(so blurrier subs keep their star wings); null to test them as they are.",
    )
    rejection_normalization: Literal["equalize_noise", "none"] = Field(
        "equalize_noise",
        description="Rejection sees every sub scaled about the background to the same noise "
        "(PixInsight's scale + zero offset); the average keeps the photometric normalization.",
    )
    memory_limit_mb: int | None = Field(
        None,
        ge=400,
        description="Peak memory of an integration (MiB); null: a quarter of this machine's RAM.",
    )
    maps: IntegrationMaps = Field(
        default_factory=lambda: IntegrationMaps(), description="Per-pixel maps saved."
    )
    autocrop: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Crop the master to the rectangle covered by at least this fraction of subs.",
    )


class PreviewConfig(_Section):
    """PNG previews with the PixInsight STF auto-stretch."""

    linked: bool = Field(True, description="One stretch for all channels (true colour balance).")
    shadows_clipping: float = Field(
        -2.8, le=0, description="Shadows clip point in MAD-sigmas from the median."
    )
    target_background: float = Field(
        0.25, gt=0, lt=1, description="Where the background median lands after stretching."
    )


# --------------------------------------------------------------------------- colour combination
class RGBPalette(_Section):
    """Broadband colour: each filter's master becomes its own channel."""

    method: Literal["rgb"] = "rgb"
    red: str = Field("R", description="Filter (FILTER card) of the red channel.")
    green: str = Field("G", description="Filter of the green channel.")
    blue: str = Field("B", description="Filter of the blue channel.")


class SHOPalette(_Section):
    """Hubble palette: SII as red, H-alpha as green, OIII as blue."""

    method: Literal["sho"] = "sho"
    sii: str = Field("SII", description="Filter of the sulphur-II master (red).")
    ha: str = Field("Ha", description="Filter of the hydrogen-alpha master (green).")
    oiii: str = Field("OIII", description="Filter of the oxygen-III master (blue).")


class HOOPalette(_Section):
    """Bicolour: H-alpha as red, OIII as green and blue."""

    method: Literal["hoo"] = "hoo"
    ha: str = Field("Ha", description="Filter of the hydrogen-alpha master (red).")
    oiii: str = Field("OIII", description="Filter of the oxygen-III master (green and blue).")


Palette = Annotated[RGBPalette | SHOPalette | HOOPalette, Field(discriminator="method")]


class LinearFitConfig(_Section):
    """PixInsight LinearFit: each channel matched to a reference channel by a robust line."""

    reference: Literal["auto", "red", "green", "blue"] = Field(
        "auto",
        description="Channel the others are fitted to; auto: the one with the brightest "
        "background (PixInsight's advice).",
    )
    reject_low: float = Field(
        0.0, ge=0, lt=1, description="Ignore pixels below this fraction of each image's range."
    )
    reject_high: float = Field(
        0.92, gt=0, le=1, description="Ignore pixels above this fraction (saturated star cores)."
    )


class PolynomialBackground(_Section):
    """A 2-D polynomial surface of total degree ``order`` (gradients, sky glow)."""

    method: Literal["polynomial"] = "polynomial"
    order: int = Field(2, ge=0, le=6, description="Total degree of the surface (0-6).")


class SplineBackground(_Section):
    """A thin-plate spline surface through the samples (complex gradients)."""

    method: Literal["spline"] = "spline"
    smoothing: float = Field(
        1.0, ge=0, description="Spline smoothing; 0 passes through every sample."
    )


BackgroundModel = Annotated[PolynomialBackground | SplineBackground, Field(discriminator="method")]


class BackgroundExtractionConfig(_Section):
    """Automatic background extraction through star-free samples, per channel."""

    model: BackgroundModel = Field(
        default_factory=PolynomialBackground, description="Surface fitted to the samples."
    )
    grid: int = Field(16, ge=3, le=200, description="Samples along the longer image axis.")
    box: int = Field(0, ge=0, description="Sample box side in pixels; 0: the spacing (tiles).")
    rejection_sigma: float = Field(
        2.5, gt=0, description="Samples this many sigmas above the fit are rejected (nebulae)."
    )
    correction: Literal["subtract", "divide"] = Field(
        "subtract",
        description="subtract (gradients, light pollution) or divide (vignetting residue).",
    )


class StarsWhiteReference(_Section):
    """White balance from the stars: their mean colour is made neutral."""

    method: Literal["stars"] = "stars"
    max_stars: int = Field(200, ge=5, description="Brightest unsaturated stars measured.")
    min_snr: float = Field(20.0, gt=0, description="Stars fainter than this SNR are ignored.")


class RegionWhiteReference(_Section):
    """White balance from a chosen region (a G2V star, a face-on spiral galaxy)."""

    method: Literal["region"] = "region"
    box: tuple[int, int, int, int] = Field(
        description="x0, y0, x1, y1 of the white reference in pixels of the combined image."
    )


class FactorsWhiteReference(_Section):
    """White balance by given channel factors (from a photometric calibration elsewhere)."""

    method: Literal["factors"] = "factors"
    red: float = Field(1.0, gt=0, description="Factor of the red channel.")
    green: float = Field(1.0, gt=0, description="Factor of the green channel.")
    blue: float = Field(1.0, gt=0, description="Factor of the blue channel.")


WhiteReference = Annotated[
    StarsWhiteReference | RegionWhiteReference | FactorsWhiteReference,
    Field(discriminator="method"),
]


class ColourCalibrationConfig(_Section):
    """Background neutralization and white balance, on linear data."""

    background_neutralization: bool = Field(
        True, description="Make the three channels' backgrounds equal."
    )
    white_reference: WhiteReference = Field(
        default_factory=StarsWhiteReference, description="What is made neutral (white)."
    )


class CombineConfig(_Section):
    """Masters of different filters registered onto one grid and combined into colour."""

    palette: Palette = Field(
        default_factory=RGBPalette, description="Which filter goes to which channel."
    )
    luminance: str | None = Field(
        "L", description="Filter of a luminance master registered and kept alongside."
    )
    background: BackgroundExtractionConfig | None = Field(
        default_factory=BackgroundExtractionConfig,
        description="Background extraction per channel; null leaves gradients in.",
    )
    linear_fit: LinearFitConfig | None = Field(
        default_factory=LinearFitConfig, description="Channel matching; null skips it."
    )
    colour_calibration: ColourCalibrationConfig | None = Field(
        default_factory=ColourCalibrationConfig,
        description="Background neutralization and white balance; null skips both.",
    )


class EngineConfig(_Section):
    """Scheduling of the dask graph."""

    scheduler: Literal["threads", "processes", "synchronous", "distributed"] = Field(
        "threads",
        description="dask scheduler: threads (default), processes (GIL-free), synchronous, "
        "distributed (the cluster at address, or a local cluster of worker processes).",
    )
    workers: int | None = Field(None, ge=1, description="Workers; default: CPU count.")
    address: str | None = Field(
        None,
        description="dask.distributed scheduler address (tcp://host:8786) for distributed.",
    )


class PipelineConfig(_Section):
    """The whole LinearLink configuration; each section configures one stage."""

    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    debayer: DebayerConfig = Field(default_factory=DebayerConfig)
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)
    combine: CombineConfig | None = Field(
        default_factory=CombineConfig,
        description="Colour combination of a run's masters (done when every palette filter "
        "has a master); null turns it off.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
