"""Online forecasters for many series at once (Numba kernels over state arrays).

>>> from fastshard.forecast import Forecaster
>>> f = Forecaster(3, season_lengths=(24, 168))
>>> f.update(values)            # one step, every series, NaN = missing
>>> f.predict(12)               # (3, 12) point forecasts
"""

from fastshard.forecast.forecaster import DEFAULT_HW_SETS, MODELS, Forecaster

__all__ = ["DEFAULT_HW_SETS", "MODELS", "Forecaster"]
