"""Pure numerical kernels: arrays in, arrays out.

No I/O, no configuration objects, no module-level mutable state; NaN means "no data"
throughout. Modules: :mod:`~pipeline.kernels.stats`, :mod:`~pipeline.kernels.rejection`,
:mod:`~pipeline.kernels.combine`, :mod:`~pipeline.kernels.stretch`,
:mod:`~pipeline.kernels.transform`, :mod:`~pipeline.kernels.calibration`,
:mod:`~pipeline.kernels.background`, :mod:`~pipeline.kernels.linearfit`,
:mod:`~pipeline.kernels.colour`.
"""
