"""Array type shared by the spec.

Every spec function accepts and returns ``Array``: a NumPy array whose dtype is either ``float64`` (the default,
fast oracle) or ``object`` holding ``mpmath.mpf`` numbers (the arbitrary-precision oracle, same code). See
``spec.precision``.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
"""float64 or object (mpmath.mpf) NumPy array."""

F64 = npt.NDArray[np.float64]
"""An array that is always float64 (sampling, statistics)."""
