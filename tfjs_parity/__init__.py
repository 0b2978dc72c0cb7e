"""tfjs_parity: run one Keras model in TensorFlow Python, tfjs-node and a headless browser,
capture every layer's weights and output, and diff them layer by layer."""


class KitError(Exception):
    """An expected failure (bad input, a missing prerequisite): printed as one line, exit 2."""
