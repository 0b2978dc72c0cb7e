"""The numbers every judgement shares: the two storage precisions, which one a capture has,
the ceiling no float32 rounding reaches, and a point's outputs as one flat array.

A leaf: it imports nothing of the package, so the verdicts (verdict.py), the quantization
checks (quantization.py) and the kinds' error models can all read it without importing
each other."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Precision:
    name: str
    unit_roundoff: float
    largest: float
    tiny: float      # the smallest normal number: GPUs may flush anything below it to zero


FLOAT32 = Precision("float32", 2.0 ** -24, float(np.finfo(np.float32).max), 2.0 ** -126)
FLOAT16 = Precision("float16", 2.0 ** -11, 65504.0, 2.0 ** -14)


def storage_precision(capture):
    """float16 when tfjs says it renders to half-float textures, else float32."""
    return FLOAT16 if capture.metadata.get("precision_flags", {}).get("WEBGL_RENDER_FLOAT32_ENABLED") is False \
        else FLOAT32


# The ceiling for a layer without an error model (docs/verdicts-and-bounds.md): an error
# beyond CEILING of the layer's magnitude, and beyond CEILING_FACTOR times TF Python's own
# error there, is no float32 rounding. CEILING is 2**14 float32 unit roundoffs: each rounding
# moves a value by at most 2**-24 of the numbers involved, so over 16,000 of them would have
# to err the same way, at the magnitude of the output; Python's own error, times 1000, lets a
# layer whose arithmetic is naturally far off (heavy cancellation) stay below it.
CEILING = 2.0 ** -10
CEILING_FACTOR = 1000.0


def joined(arrays):
    """A point's outputs (several for e.g. an LSTM returning its states) as one flat array."""
    return np.concatenate([np.ravel(np.asarray(a)) for a in arrays]) if arrays else np.zeros(0)
