"""Helpers for test_bounds.py: build one tf-keras layer with seeded weights, make the exact
(float64) answer the way the kit does (reference.float64_clone, then the layer alone on
float64 inputs, as LocalReference.evaluate calls it), and evaluate the layer in float32 in
other rounding orders with numpy.

Every float32 evaluation here rounds like a real runtime could: products of float32 values
are exact in float64 (24 + 24 bits < 53), so "round each product, then add in float32 in a
shuffled order" and "add each exact product to a float32 accumulator with one rounding"
(fused multiply-add) are both computed exactly as float32 hardware would.

Not a conftest.py: the unit tests beside this file do `from conftest import ROOT`, which
means tests/conftest.py; a tests/unit/conftest.py would shadow it.
"""
import functools
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

F32 = np.float32


@functools.cache
def keras():
    """(tensorflow, tf_keras), imported once per session."""
    import tensorflow as tf
    import tf_keras
    return tf, tf_keras


# --- exact answer, as the kit computes it -----------------------------------------------

def kit_float64_layer(layer, inputs):
    """The float64 twin of a built float32 `layer`, made exactly as the kit makes its
    references: a one-layer model, reference.float64_clone, and that clone's layer. Slow
    (two symbolic calls, a JSON round trip): float64_layer below is the same thing, fast."""
    from tfjs_parity.reference import float64_clone
    tf, k = keras()
    tensors = [k.Input(shape=a.shape[1:], batch_size=a.shape[0], dtype=a.dtype.name) for a in inputs]
    outputs = layer(tensors[0] if len(tensors) == 1 else tensors)
    model = k.Model(tensors, outputs)
    clone = float64_clone(model, k)
    return clone.get_layer(layer.name)


def _as_float64(config):
    """reference._as_float64's rewrite of a (tf-keras) config: every float dtype float64."""
    if isinstance(config, dict):
        return {key: ("float64" if key == "dtype" and value in ("float32", "float16", "mixed_float16")
                      else _as_float64(value)) for key, value in config.items()}
    if isinstance(config, list):
        return [_as_float64(value) for value in config]
    return config


def float64_layer(layer, inputs):
    """kit_float64_layer for one layer, without a model: its serialized config rewritten to
    float64 the kit's way, rebuilt on float64 inputs, the float32 weights cast exactly.
    test_bounds checks the two agree bit for bit."""
    tf, k = keras()
    clone = k.layers.deserialize(_as_float64(k.layers.serialize(layer)))
    arrays = [tf.constant(a) for a in as_float64(inputs)]
    clone(arrays[0] if len(arrays) == 1 else arrays)
    clone.set_weights([np.asarray(w, np.float64) for w in layer.get_weights()])
    return clone


def evaluate(layer, arrays, mask=None):
    """LocalReference.evaluate: `layer` on `arrays` (with a Keras `mask`), results as float64."""
    tf, _ = keras()
    tensors = [tf.constant(a) for a in arrays]
    kwargs = {} if mask is None else {"mask": tf.constant(mask)}
    result = layer(tensors[0] if len(tensors) == 1 else tensors, **kwargs)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r, dtype=np.float64) for r in result]


def as_float64(arrays):
    from tfjs_parity.reference import as_float64 as kit_as_float64
    return kit_as_float64(arrays)


# --- building layers --------------------------------------------------------------------

def randomise(layer, rng, scale=0.5):
    """Seeded weights; variances and BatchNormalization scales positive, as trained ones are."""
    values = []
    for variable in layer.weights:
        shape = tuple(variable.shape)
        name = variable.name
        if "moving_variance" in name:
            values.append(rng.uniform(0.3, 2.0, shape))
        elif "gamma" in name:
            values.append(rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape))
        else:
            values.append(rng.normal(0, scale, shape))
    layer.set_weights([v.astype(F32) for v in values])


def built(layer, inputs, rng, scale=0.5):
    """`layer`, built on `inputs` (float32 or int arrays), with seeded weights."""
    tf, _ = keras()
    layer(tf.constant(inputs[0]) if len(inputs) == 1 else [tf.constant(a) for a in inputs])
    randomise(layer, rng, scale)
    return layer


def float32_output(layer, inputs, mask=None):
    tf, _ = keras()
    kwargs = {} if mask is None else {"mask": tf.constant(mask)}
    result = layer(tf.constant(inputs[0]) if len(inputs) == 1 else [tf.constant(a) for a in inputs], **kwargs)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r) for r in result]


# --- float32 sums in other orders -------------------------------------------------------

SUM_MODES = ("serial", "fma", "tree")


def rounded_sum(terms, rng, mode):
    """Sum `terms` (float64, shape (n, ...), each exactly a product of float32 values or a
    float32 value) over axis 0 in float32, in an order shuffled per output element.
    serial: each term rounded to float32, then added one by one; fma: each exact term added
    to a float32 accumulator, one rounding per step; tree: rounded terms added pairwise."""
    terms = np.asarray(terms, np.float64)
    order = np.argsort(rng.random(terms.shape), axis=0)
    shuffled = np.take_along_axis(terms, order, axis=0)
    if mode == "serial":
        acc = shuffled[0].astype(F32)
        for term in shuffled[1:]:
            acc = acc + term.astype(F32)
        return acc
    if mode == "fma":
        acc = shuffled[0].astype(F32)
        for term in shuffled[1:]:
            acc = (acc.astype(np.float64) + term).astype(F32)
        return acc
    if mode == "tree":
        level = list(shuffled.astype(F32))
        while len(level) > 1:
            pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
            level = pairs + ([level[-1]] if len(level) % 2 else [])
        return level[0]
    raise ValueError(mode)


def product_terms(a, b):
    """a (..., n) and b (n, m) of float32 values: the n exact products, shape (n, ..., m)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.moveaxis(a[..., :, None] * b, -2, 0)


def with_bias(terms, bias):
    if bias is None:
        return terms
    return np.concatenate([terms, np.broadcast_to(np.asarray(bias, np.float64), terms.shape[1:])[None]], axis=0)


def kernel_terms(layer, x, kernel, mask_shape, place):
    """The exact products of a convolution-like `layer` (no bias, no activation), one array
    per kernel entry group: `kernel` masked to the entries `place(index)` selects, for each
    index of `mask_shape`, evaluated in float64 (each output element then holds a single
    product and zeros: exact)."""
    tf, k = keras()
    config = dict(layer.get_config(), name=layer.name + "_terms", activation="linear", use_bias=False,
                  dtype="float64")
    for key in ("bias_initializer", "bias_regularizer", "bias_constraint"):
        config.pop(key, None)
    copy = type(layer).from_config(config)
    xt = tf.constant(np.asarray(x, np.float64))
    copy(xt)
    terms = []
    for index in np.ndindex(*mask_shape):
        masked = np.zeros_like(kernel, dtype=np.float64)
        selector = place(index)
        masked[selector] = kernel[selector]
        copy.set_weights([masked])
        terms.append(np.asarray(copy(xt), np.float64))
    return np.stack(terms)


def conv_terms(layer, x):
    """(terms, bias) of a Conv / ConvTranspose / DepthwiseConv layer on x."""
    weights = layer.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    bias = weights[1] if getattr(layer, "use_bias", False) else None
    name = type(layer).__name__
    spatial = kernel.ndim - 2
    if name.startswith("Depthwise"):  # (window..., in, multiplier): one product per window entry
        terms = kernel_terms(layer, x, kernel, kernel.shape[:spatial], lambda i: i)
    elif name.endswith("Transpose"):  # (window..., out, in)
        shape = kernel.shape[:spatial] + (kernel.shape[-1],)
        terms = kernel_terms(layer, x, kernel, shape, lambda i: i[:-1] + (slice(None), i[-1]))
    else:  # (window..., in, out)
        terms = kernel_terms(layer, x, kernel, kernel.shape[:-1], lambda i: i)
    return terms, bias


# --- float32 activations, in the forms runtimes use ---------------------------------------

def _sigmoid(z):
    return (F32(1) / (F32(1) + np.exp(-z))).astype(F32)


def _tanh_tfjs(z):
    e = np.exp(F32(-2) * np.abs(z))
    return (np.sign(z) * ((F32(1) - e) / (F32(1) + e))).astype(F32)


def _erf_tfjs(t):
    """tfjs's erf (tfjs-core erf_util.js, Abramowitz & Stegun 7.1.26), every step in float32."""
    p, a = F32(0.3275911), [F32(v) for v in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]
    sign, t = np.sign(t).astype(F32), np.abs(t).astype(F32)
    k = (F32(1) / (F32(1) + p * t)).astype(F32)
    poly = ((((a[4] * k + a[3]) * k + a[2]) * k + a[1]) * k + a[0]) * k
    return (sign * (F32(1) - poly.astype(F32) * np.exp(-t * t).astype(F32))).astype(F32)


def _gelu_tfjs(z):
    """tfjs-layers' gelu: x * 0.5 * (1 + erf(x / sqrt 2)), each op stored in float32."""
    cdf = (F32(0.5) * (F32(1) + _erf_tfjs((z / F32(np.sqrt(2))).astype(F32)))).astype(F32)
    return (z * cdf).astype(F32)


def _gelu_erf32(z):
    """The same with an accurate erf rounded to float32 (TensorFlow's)."""
    from math import erf
    t = (z / F32(np.sqrt(2))).astype(F32)
    e = np.vectorize(lambda v: erf(float(v)))(t).astype(F32)
    return (z * (F32(0.5) * (F32(1) + e)).astype(F32)).astype(F32)


def _elu(z, alpha=1.0):
    return np.where(z < 0, F32(alpha) * (np.exp(z) - F32(1)), z).astype(F32)


def _softmax(z, axis=-1):
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True, dtype=F32)).astype(F32)


def _softmax_logsumexp(z, axis=-1):
    """tfjs's form: exp(z - logsumexp(z))."""
    m = np.max(z, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True, dtype=F32))
    return np.exp(z - lse).astype(F32)


ACTIVATIONS32 = {
    "linear": [lambda z: z],
    "relu": [lambda z: np.maximum(z, F32(0))],
    "relu6": [lambda z: np.clip(z, F32(0), F32(6))],
    "sigmoid": [_sigmoid],
    "tanh": [np.tanh, _tanh_tfjs],
    "elu": [_elu, lambda z: np.where(z < 0, np.expm1(z), z).astype(F32)],
    "selu": [lambda z: (F32(1.0507009873554805) * _elu(z, 1.6732632423543772)).astype(F32)],
    "softplus": [lambda z: np.log(F32(1) + np.exp(z)).astype(F32), lambda z: np.log1p(np.exp(z)).astype(F32)],
    "softsign": [lambda z: (z / (F32(1) + np.abs(z))).astype(F32)],
    "swish": [lambda z: (z * _sigmoid(z)).astype(F32)],
    "silu": [lambda z: (z * _sigmoid(z)).astype(F32)],
    "hard_sigmoid": [lambda z: np.clip(F32(0.2) * z + F32(0.5), F32(0), F32(1)).astype(F32)],
    "exponential": [lambda z: np.exp(z).astype(F32)],
    "softmax": [_softmax, _softmax_logsumexp],
    "gelu": [_gelu_tfjs, _gelu_erf32],
}


# --- recurrences in float32, each pre-activation summed in a shuffled order ---------------

def recurrence32(name, weights, x, rng, mode, go_backwards=False, return_sequences=False,
                 activation="tanh", recurrent_activation="sigmoid", mask=None):
    """SimpleRNN, LSTM or GRU(reset_after=False) in float32 numpy, as tf-keras defines them;
    with a mask (batch, steps), a masked step keeps the states and outputs the previous output."""
    W, U = np.asarray(weights[0], F32), np.asarray(weights[1], F32)
    b = np.asarray(weights[2], F32)
    units = U.shape[0]
    act = ACTIVATIONS32[activation][0]
    rec = ACTIVATIONS32[recurrent_activation][0]
    batch, steps = x.shape[:2]
    h = np.zeros((batch, units), F32)
    c = np.zeros((batch, units), F32)

    def pre(xt, hin, cols):
        terms = np.concatenate([product_terms(xt, W[:, cols]), product_terms(hin, U[:, cols])])
        return rounded_sum(with_bias(terms, b[cols]), rng, mode)

    order = range(steps)[::-1] if go_backwards else range(steps)
    sequence = []
    for t in order:
        xt = x[:, t, :].astype(F32)
        h_before, c_before = h, c
        if name == "SimpleRNN":
            h = act(pre(xt, h, slice(0, units)))
        elif name == "LSTM":
            i, f, g, o = (pre(xt, h, slice(j * units, (j + 1) * units)) for j in range(4))
            i, f, g, o = rec(i), rec(f), act(g), rec(o)
            c = f * c + i * g
            h = (o * act(c)).astype(F32)
        elif name == "GRU":
            z = rec(pre(xt, h, slice(0, units)))
            r = rec(pre(xt, h, slice(units, 2 * units)))
            hh = act(pre(xt, (r * h).astype(F32), slice(2 * units, 3 * units)))
            h = (z * h + (F32(1) - z) * hh).astype(F32)
        else:
            raise ValueError(name)
        if mask is not None:
            keep = mask[:, t][:, None]
            h, c = np.where(keep, h, h_before).astype(F32), np.where(keep, c, c_before).astype(F32)
        sequence.append(h)
    return np.stack(sequence, 1) if return_sequences else h
