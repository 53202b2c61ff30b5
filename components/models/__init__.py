"""Model definitions: one module per framework, both built from the same ``Architecture``."""

from collections.abc import Callable

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]
"""How Relay calls any model, whatever its framework or runtime: NCHW float32 images in, float32 logits out."""
