"""Rounding bounds per layer type: how far any correct float32 evaluation of one layer, on
given inputs, can be from the exact answer. A registry keyed by the layer's class; each
entry's docstring is its reasoning (docs/verdicts-and-bounds.md lists them).

Every bound is first-order in u, the unit roundoff of the runtime's storage (2**-24 for
float32, 2**-11 for float16 textures), computed per output element, in float64, from the
exact (float64) values of the layer on those inputs. Two facts are used throughout:

- Sums and dot products (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
  §3.1): n terms summed in any order, with or without fused multiply-add, are within
  gamma(n) * sum |terms| of the exact sum, gamma(n) = n*u / (1 - n*u).
- Elementary functions on GPUs are not correctly rounded. GLSL ES 3.00 §4.5.1 (highp)
  and WGSL (f32 accuracy) allow: exp (3 + 2|x|) ULP, log 3 ULP (absolute 2**-21 in
  [0.5, 2]), inversesqrt 2 ULP, division 2.5 ULP; +, -, * correctly rounded. One ULP is
  at most 2u relative. CPU libraries do better, so these bounds hold for every backend.
  Denormals may be flushed to zero (GLSL ES 3.00 §4.5.1): every bound allows the
  smallest normal number on top.

An entry returns one bound array per output, or None when it has no error model for this
configuration: the layer then gets metrics and "no bound", never a guessed verdict.

(Over 500 lines: one registry, each entry with its derivation beside its code; split, the
entries would lose the shared helpers they are written in terms of.)
"""
import math
import weakref

import numpy as np

EXACT = "exact"


def gamma(n, u):
    return n * u / (1 - n * u)


# --- activations: (evaluation error E(z, y), Lipschitz factor L(y)) ----------------------
# E bounds the error of computing y = f(z) from an exact z; L(y) * (error of z) bounds what
# an error already in z becomes. 1 ULP <= 2u relative. tfjs's WebGL forms are the ones
# derived (the costliest): sigmoid 1/(1+exp(-z)); tanh (1-e)/(1+e) with e = exp(-2|z|);
# elu exp(z)-1.

def _sigmoid_error(z, y, u):
    """exp(-z): (6 + 4|z|)u relative, 1 + e and the division (2.5 ULP) and the store: 7u."""
    return (13 + 4 * np.abs(z)) * u * np.abs(y)


def _tanh_error(z, y, u):
    """With e = exp(-2|z|) off by (6 + 10|z|)u relative, |dy/de| <= 2: 2e(6 + 10|z|)u <= 16u
    absolute (|z| e**(-2|z|) <= 1/(2e)); then two sums, a division and the store: 8u|y|."""
    return 16 * u + 8 * u * np.abs(y)


def _elu_error(alpha):
    def error(z, y, u):
        """exp(z) - 1 for z < 0: (6 + 4|z|)u e**z <= 7.5u absolute, the subtraction u, then
        alpha times it and the store: 2u|y|."""
        return np.where(z < 0, 8.5 * u * alpha, 0.0) + 2 * u * np.abs(y)
    return error


def _softplus_error(z, y, u):
    """log(1 + exp(z)): exp's (6 + 4|z|)u relative carried through log1p, log's 2**-21
    absolute (8u) or 3 ULP, the store."""
    return (15 + 4 * np.abs(z)) * u + 7 * u * np.abs(y)


def _gelu_error(z, y, u):
    """tfjs: x * 0.5 * (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (tfjs-core
    erf_util.js): 1.5e-7 (2.6u) absolute from the formula itself; evaluated in float32 on a
    GPU, 1/(1 + p t) within 7u relative carries through the degree-5 polynomial as
    sum i|a_i| (16.2) times 7u, Horner's 10 roundings on sum |a_i| (4.5), exp(-t**2) within
    (8 + 4t**2)u of a product at most 1: erf within 180u absolute. Halved in the cdf, plus two
    roundings: 92u; times |x|, the division by sqrt 2 and the product's store: (93|x| + |y|)u.
    Keras' exact gelu (approximate=False) is the same function."""
    return (93 * np.abs(z) + np.abs(y)) * u


def _store(z, y, u):
    """Exact operations (max, comparisons, identity): only the store rounds."""
    return u * np.abs(y)


ACTIVATIONS = {
    "linear": (_store, 1.0),
    "relu": (_store, 1.0),
    "relu6": (_store, 1.0),
    "sigmoid": (_sigmoid_error, 0.25),
    "tanh": (_tanh_error, 1.0),
    "elu": (_elu_error(1.0), 1.0),
    "selu": (lambda z, y, u: 1.0507 * _elu_error(1.6733)(z, y, u) + u * np.abs(y), 1.0507 * 1.6733),
    "softplus": (_softplus_error, 1.0),
    "softsign": (lambda z, y, u: 7 * u * np.abs(y), 1.0),
    # z * sigmoid(z): the sigmoid's (13 + 4|z|)u relative, the product and more slack: (28 + 8|z|)u
    "swish": (lambda z, y, u: (28 + 8 * np.abs(z)) * u * np.abs(y), 1.1),
    "hard_sigmoid": (lambda z, y, u: 3 * u * (0.2 * np.abs(z) + 0.5) + u, 0.2),
    "exponential": (lambda z, y, u: (6 + 4 * np.abs(z)) * u * np.abs(y), None),  # L = e**z = y
}
ACTIVATIONS["silu"] = ACTIVATIONS["swish"]
ACTIVATIONS["gelu"] = (_gelu_error, 1.13)  # max |gelu'| = 1.1289


def activation_name(function):
    name = getattr(function, "__name__", None) or type(function).__name__
    return name.lower()


def activation_bound(name, z, y, u, z_bound, axis=-1):
    """Bound on y = activation(z) given an exact z off by at most `z_bound`; None if unknown."""
    if name == "softmax":
        return _softmax_bound(z, y, u, z_bound, axis)
    if name not in ACTIVATIONS:
        return None
    error, lipschitz = ACTIVATIONS[name]
    carried = np.abs(y) * z_bound if lipschitz is None else lipschitz * z_bound
    return error(z, y, u) + carried


def _softmax_bound(z, y, u, z_bound, axis):
    """y = exp(z - max) / sum, or tfjs's exp(z - logsumexp): with d = z - max, each exp is
    off by (6 + 4(|d| + log n))u relative, the sum of n of them by n u plus its terms'
    weighted errors, log and division 8u and 5u, subtractions and the store: relative
    (27 + 5(|d| + log n) + 4 sum_j y_j |d_j| + n) u. An error e in z moves y_i by at most
    2 y_i max_j e_j (the rows of softmax's Jacobian sum to 2 y_i (1 - y_i))."""
    n = z.shape[axis]
    d = np.abs(z - np.max(z, axis=axis, keepdims=True)) + math.log(n)
    spread = np.sum(y * d, axis=axis, keepdims=True)
    relative = (27 + 5 * d + 4 * spread + n) * u
    carried = 2 * np.abs(y) * np.max(z_bound, axis=axis, keepdims=True) if np.ndim(z_bound) else 2 * np.abs(y) * z_bound
    return relative * np.abs(y) + carried


# --- the registry ------------------------------------------------------------------------

REGISTRY = {}


def bound_of(*class_names):
    def register(function):
        for name in class_names:
            REGISTRY[name] = function
        return function
    return register


TAKES_MASK = set()  # the entries whose layer's arithmetic depends on a Keras mask: they are given it


def layer_bound(layer, inputs, outputs, precision, evaluate, mask=None):
    """[bound per output] for `layer` (a float64 Keras layer) on `inputs` with exact
    `outputs`, or None. `evaluate(layer, arrays)` runs a layer in float64; `mask`: the Keras
    mask the layer was called with, if any. EXACT means the layer only moves or selects
    values: its output must be exactly the reference's."""
    entry = REGISTRY.get(type(layer).__name__)
    if entry is None:
        return None
    extra = {"mask": mask} if entry in TAKES_MASK else {}
    bounds = entry(layer, inputs, outputs, precision.unit_roundoff, evaluate, **extra)
    if bounds is None:
        return None
    if bounds is EXACT:
        # float16 storage rounds what it stores, the model's float32 inputs included, even
        # where nothing is computed; float32 storage holds float32 values as they are
        rounding = 0.0 if precision.unit_roundoff <= 2.0 ** -24 else precision.unit_roundoff
        bounds = [rounding * np.abs(y) for y in outputs]
    return [b + precision.tiny for b in bounds]


@bound_of("InputLayer", "Reshape", "Flatten", "Permute", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D",
          "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "Embedding", "Dropout", "SpatialDropout1D",
          "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity", "Concatenate",
          "Maximum", "Minimum", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D",
          "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ReLU", "ThresholdedReLU", "Masking")
def _exact(layer, inputs, outputs, u, evaluate):
    """Moving, selecting, comparing and zeroing values: no arithmetic that rounds, so the
    output must equal the exact answer (only the store could round, and the inputs were
    already stored in the same precision). An Embedding's rows are its weights, stored in
    the runtime's precision: one rounding (none in float32, whose weights are the model's)."""
    if type(layer).__name__ == "ReLU" and float(getattr(layer, "negative_slope", 0) or 0) != 0:
        return [2 * u * np.abs(y) for y in outputs]
    if type(layer).__name__ == "Embedding":
        return [u * np.abs(y) for y in outputs]
    return EXACT


@bound_of("UpSampling2D", "UpSampling1D")
def _upsampling(layer, inputs, outputs, u, evaluate):
    """Nearest neighbours copy values (exact); bilinear interpolation (Keras: half-pixel
    centres, as tf.image.resize) is a weighted sum of 4 values (bilinear_bound)."""
    interpolation = getattr(layer, "interpolation", "nearest")
    if interpolation == "nearest":
        return EXACT
    if interpolation != "bilinear" or type(layer).__name__ != "UpSampling2D":
        return None
    x = inputs[0]
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    height, width = x.shape[1] * layer.size[0], x.shape[2] * layer.size[1]
    bound = bilinear_bound(x, height, width, u, half_pixel=True)
    return [np.moveaxis(bound, -1, 1) if channels_first else bound]


def bilinear_bound(x, height, width, u, align_corners=False, half_pixel=True):
    """Bilinear resizing of NHWC `x` to height x width: each output is
    top + (bottom - top) fy with top = a + (b - a) fx (TensorFlow's kernel; tfjs's the
    same), from the 4 neighbours at the source coordinate c = (i + 0.5) s - 0.5 (half-pixel),
    i s (align_corners: s = (n - 1)/(m - 1)), or i s. c is three float32 roundings of numbers
    up to the input's size n: off by d <= 4u(n + 1), and fx, fy with it (frac is exact);
    the output moves by at most 2M d per axis (|dv/dfx| <= |b - a| + |d - c| over the
    weights), M the largest |x| near the coordinate (the 3 rows and columns around it: a
    coordinate off by d may pick the neighbouring pair, the value being continuous). The
    arithmetic: each lerp's subtraction, product and sum, twice: 10uM; 12uM with the store.
    Doubled: TensorFlow resizes in float32 whatever its input (tf.image.resize and
    ResizeBilinear return float32 for float64 images), so the kit's "exact" answer here is
    itself a float32 evaluation, within the same bound of the true value."""
    def axis(out_n, in_n):
        i = np.arange(out_n, dtype=np.float64)
        if align_corners and out_n > 1:
            c = i * ((in_n - 1) / (out_n - 1))
        elif half_pixel:
            c = (i + 0.5) * (in_n / out_n) - 0.5
        else:
            c = i * (in_n / out_n)
        low = np.clip(np.floor(c).astype(np.int64), 0, in_n - 1)
        return [np.clip(low + k, 0, in_n - 1) for k in (-1, 0, 1, 2)], 4 * u * (in_n + 1)
    (rows, dy), (cols, dx) = axis(height, x.shape[1]), axis(width, x.shape[2])
    magnitude = np.abs(x)
    near = np.max([magnitude[:, r][:, :, c] for r in rows for c in cols], axis=0)
    return 2 * (12 * u + 2 * dx + 2 * dy) * near


@bound_of("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
          "DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv1D", "SeparableConv2D")
def _kernel_layer(layer, inputs, outputs, u, evaluate):
    """z = W x + b sums n products and the bias: within gamma(n + 2) * S of exact, where
    S = sum |w x| + |b| is the layer evaluated with |weights| on |inputs| (any summation
    order, fused or not, tiled or not: Higham §3.1). n is the products per output: the
    kernel's fan-in (Dense, Conv), its window (Depthwise), window plus fan-in (Separable:
    depthwise then pointwise compose). Then the activation: its own evaluation error plus
    its Lipschitz factor times z's error."""
    x = inputs[0]
    weights = layer.get_weights()
    kernel = weights[0]
    name = type(layer).__name__
    if name.startswith("Depthwise"):
        n = int(np.prod(kernel.shape[:-2]))
    elif name.startswith("Separable"):
        n = int(np.prod(kernel.shape[:-2])) + int(np.prod(weights[1].shape[:-1]))
    elif name.endswith("Transpose"):
        n = int(np.prod(kernel.shape[:-2])) * kernel.shape[-1]
    else:
        n = int(np.prod(kernel.shape[:-1]))
    if activation_name(getattr(layer, "activation", None)) == "linear":
        z = outputs[0]  # the layer's exact output is its pre-activation
    else:
        z = evaluate(_linear_copy(layer, weights, x.shape), [x])[0]
    z_bound = gamma(n + 2, u) * absolute_scale(layer, weights, x, n, evaluate)
    return _activation_after(layer, z, outputs[0], u, z_bound)


def absolute_scale(layer, weights, x, n, evaluate):
    """S = the layer's linear part on |weights| and |x|, from above: computed in float32 (the
    weights and inputs are float32 values, exactly), a sum of n + 1 non-negative terms within
    gamma32(n + 2) of S below, so S32 / (1 - gamma32(n + 2)) is at least S; several times
    faster than the same in float64, and the absolute copy is made once per layer."""
    absolute = _ABSOLUTE.get(layer)
    if absolute is None:
        absolute = _ABSOLUTE[layer] = _linear_copy(layer, [np.abs(w).astype(np.float32) for w in weights], x.shape,
                                                   dtype="float32")
    return evaluate(absolute, [np.abs(x).astype(np.float32)])[0] / (1 - gamma(n + 2, 2.0 ** -24))


_ABSOLUTE = weakref.WeakKeyDictionary()  # layer -> its float32 copy with |weights| and no activation


def _activation_after(layer, z, y, u, z_bound):
    name = activation_name(getattr(layer, "activation", None))
    bound = activation_bound(name, z, y, u, z_bound)
    return None if bound is None else [bound]


def _linear_copy(layer, weights, input_shape, dtype=None):
    """The layer with `weights` and no activation, built for `input_shape` (in `dtype`, by
    default the layer's)."""
    config = dict(layer.get_config(), name=f"{layer.name}_bound", activation="linear")
    if dtype is not None:
        config["dtype"] = dtype
    copy = type(layer).from_config(config)
    copy.build(input_shape)
    copy.set_weights(weights)
    return copy


@bound_of("Activation")
def _activation_layer(layer, inputs, outputs, u, evaluate):
    """The activation's own evaluation error on exact inputs (ACTIVATIONS, softmax)."""
    name = activation_name(layer.activation)
    bound = activation_bound(name, inputs[0], outputs[0], u, 0.0)
    return None if bound is None else [bound]


@bound_of("Softmax")
def _softmax_layer(layer, inputs, outputs, u, evaluate):
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis is None:
        return None
    return [_softmax_bound(inputs[0], outputs[0], u, 0.0, axis)]


@bound_of("LeakyReLU", "PReLU")
def _leaky(layer, inputs, outputs, u, evaluate):
    """A multiplication for negative inputs, then the store."""
    return [2 * u * np.abs(outputs[0])]


@bound_of("ELU")
def _elu_layer(layer, inputs, outputs, u, evaluate):
    return [_elu_error(float(layer.alpha))(inputs[0], outputs[0], u)]


@bound_of("BatchNormalization")
def _batch_norm(layer, inputs, outputs, u, evaluate):
    """y = gamma (x - mean) / sqrt(var + eps) + beta, evaluated in that order (tfjs) or as
    x s + (beta - mean s) with s = gamma inversesqrt(var + eps) (TensorFlow's fused
    kernel). inversesqrt is 2 ULP (4u), the sum under it u (half of it through the square
    root), each product and sum one rounding: either order is within 7.5u S + u|y| with
    S = (|x| + |mean|)|s| + |beta|. S, not |y|: after a large convolution the subtraction
    cancels, and |y| is far smaller than the numbers that were rounded."""
    x = inputs[0]
    axes = [a % x.ndim for a in np.atleast_1d(layer.axis)]
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]

    def param(name, default):
        value = getattr(layer, name, None)
        return np.asarray(value, dtype=np.float64).reshape(shape) if value is not None else default
    gamma_, beta = param("gamma", 1.0), param("beta", 0.0)
    mean, variance = param("moving_mean", 0.0), param("moving_variance", 1.0)
    s = gamma_ / np.sqrt(variance + float(layer.epsilon))
    scale = (np.abs(x) + np.abs(mean)) * np.abs(s) + np.abs(beta)
    return [7.5 * u * scale + u * np.abs(outputs[0])]


@bound_of("LayerNormalization")
def _layer_norm(layer, inputs, outputs, u, evaluate):
    """mean over the n normalised values: off by (n + 2)u mean|x| (a sum, a division);
    variance as mean((x - mean)^2), two-pass in tf-keras and tfjs: off by (n + 3)u var
    plus the square of the mean's error; inversesqrt 4u plus half the variance's relative
    error; then (x - mean) r gamma + beta: four roundings. Each term is carried by |s| =
    |gamma| / sqrt(var + eps), the factor the errors are multiplied by."""
    if getattr(layer, "rms_scaling", False):
        return None
    x = inputs[0]
    axes = tuple(a % x.ndim for a in np.atleast_1d(layer.axis))
    n = int(np.prod([x.shape[a] for a in axes]))
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    mean = np.mean(x, axis=axes, keepdims=True)
    variance = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    gamma_ = np.asarray(layer.gamma, np.float64).reshape(shape) if getattr(layer, "gamma", None) is not None else 1.0
    beta = np.asarray(layer.beta, np.float64).reshape(shape) if getattr(layer, "beta", None) is not None else 0.0
    eps = float(layer.epsilon)
    s = np.abs(gamma_) / np.sqrt(variance + eps)
    mean_error = (n + 2) * u * np.mean(np.abs(x), axis=axes, keepdims=True)
    variance_relative = ((n + 3) * u * variance + mean_error ** 2) / (variance + eps)
    root_relative = variance_relative / 2 + 4.5 * u
    centred = np.abs(x - mean)
    return [s * mean_error + s * centred * (root_relative + 3 * u) + 2 * u * (np.abs(outputs[0]) + np.abs(beta))]


@bound_of("AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
          "GlobalAveragePooling2D", "GlobalAveragePooling3D")
def _average_pooling(layer, inputs, outputs, u, evaluate):
    """A sum of k values and a division by k (2.5 ULP on a GPU, or a multiplication by
    1/k, itself rounded): within gamma(k + 4) times the average of |x| (the same pooling
    applied to |x|). k: the pool window, or every position for a global pooling."""
    x = inputs[0]
    name = type(layer).__name__
    if name.startswith("Global"):
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        k = int(np.prod(x.shape[1:-1] if channels_last else x.shape[2:]))
    else:
        k = int(np.prod(layer.pool_size))
    scale = evaluate(layer, [np.abs(x)])[0]
    return [gamma(k + 4, u) * scale + u * np.abs(outputs[0])]


@bound_of("Add", "Average")
def _sum_merge(layer, inputs, outputs, u, evaluate):
    """k inputs summed: gamma(k - 1) sum |x_i|, plus the store's rounding. Average then
    scales by 1/k: TF divides (correctly rounded on CPU: u), tfjs-layers multiplies by 1/k
    (merge.js: 1/k rounded to float32, then the product: 2u), so at most 3 roundings more
    than the sum: gamma(k + 2) sum |x_i| / k. (A GPU division, 2.5 ULP, would need 5u: no
    runtime here divides on the GPU for Average.)"""
    k = len(inputs)
    total = sum(np.abs(x) for x in inputs)
    if type(layer).__name__ == "Average":
        return [gamma(k + 2, u) * total / k + u * np.abs(outputs[0])]
    return [gamma(k - 1, u) * total + u * np.abs(outputs[0])]


@bound_of("Subtract")
def _subtract(layer, inputs, outputs, u, evaluate):
    return [u * np.abs(outputs[0])]


@bound_of("Multiply")
def _multiply(layer, inputs, outputs, u, evaluate):
    """k factors: k - 1 roundings, relative."""
    return [gamma(len(inputs) - 1, u) * np.abs(outputs[0]) + u * np.abs(outputs[0])]


@bound_of("Rescaling")
def _rescaling(layer, inputs, outputs, u, evaluate):
    """x * scale + offset: two roundings (or one fused)."""
    scale = np.abs(inputs[0] * float(layer.scale)) + abs(float(layer.offset))
    return [2 * u * scale + u * np.abs(outputs[0])]


# --- recurrent layers: the recurrence, with its error carried step by step ---------------

@bound_of("SimpleRNN", "LSTM", "GRU")
def _recurrent(layer, inputs, outputs, u, evaluate, mask=None):
    """Each step computes gate pre-activations a = x W + h U + b: within gamma(n + 2) of
    |x||W| + |h||U| + |b| (n = input size + units), plus the error already in h carried
    through |U|. Gates add their activation's error (ACTIVATIONS) and pass on their input's
    times its Lipschitz factor; products and sums of gates add one rounding each. The
    bound is carried through all time steps, first order in u, on the exact states, so it
    grows where the recurrence amplifies and shrinks where the gates forget. The kit's own
    float64 recurrence must reproduce the layer's float64 output, or no bound is given.
    With a mask (Masking, Embedding(mask_zero=True)), a masked step keeps the states and
    their bounds as they were, and outputs the previous output (zeros where Keras is told
    zero_output_for_mask): Keras' recurrence with the mask applied."""
    return _recurrent_bound(layer, inputs[0], outputs, u, mask)


@bound_of("Bidirectional")
def _bidirectional(layer, inputs, outputs, u, evaluate, mask=None):
    """The forward and the backward layer's bounds (each a recurrence, above), merged:
    concatenated, or summed/averaged with one more rounding."""
    mode = layer.merge_mode
    if mode not in ("concat", "sum", "ave") or getattr(layer, "return_state", False):
        return None
    forward = _recurrent_bound(layer.forward_layer, inputs[0], None, u, mask)
    backward = _recurrent_bound(layer.backward_layer, inputs[0], None, u, mask)
    if forward is None or backward is None:
        return None
    fb, bb = forward[0], backward[0]
    if layer.return_sequences:
        bb = bb[:, ::-1]  # Keras turns the backward sequence back into forward time order
    if mode == "concat":
        merged = np.concatenate([fb, bb], axis=-1)
    else:
        merged = (fb + bb) / (2 if mode == "ave" else 1) + 2 * u * np.abs(outputs[0])
    if merged.shape != outputs[0].shape:
        return None
    return [merged]


TAKES_MASK.update({_recurrent, _bidirectional})


def _recurrent_bound(layer, x, outputs, u, mask=None):
    import tensorflow as tf
    name = type(layer).__name__
    cell = getattr(layer, "cell", layer)
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
    units = int(cell.units)
    use_bias = getattr(cell, "use_bias", True)
    W, U = weights[0], weights[1]
    b = weights[2] if use_bias else np.zeros(W.shape[1])
    if name == "GRU" and (getattr(cell, "reset_after", False) or b.ndim != 1):
        return None  # tfjs refuses reset_after=True; no model for it here
    if name not in ("SimpleRNN", "LSTM", "GRU"):
        return None

    def act(function, a):
        return np.asarray(function(tf.constant(a)), np.float64)

    activation, recurrent = cell.activation, getattr(cell, "recurrent_activation", None)
    act_name = activation_name(activation)
    rec_name = activation_name(recurrent) if recurrent is not None else None
    if act_name not in ACTIVATIONS or (rec_name is not None and rec_name not in ACTIVATIONS):
        return None
    steps = range(x.shape[1])
    if layer.go_backwards:
        steps = reversed(list(steps))
    n = W.shape[0] + units
    batch = x.shape[0]
    h, eh = np.zeros((batch, units)), np.zeros((batch, units))
    c, ec = np.zeros((batch, units)), np.zeros((batch, units))
    aW, aU, ab = np.abs(W), np.abs(U), np.abs(b)
    sequence, sequence_bounds = [], []

    def pre(xt, hin, ehin, cols):
        a = xt @ W[:, cols] + hin @ U[:, cols] + b[cols]
        e = gamma(n + 2, u) * (np.abs(xt) @ aW[:, cols] + np.abs(hin) @ aU[:, cols] + ab[cols]) + ehin @ aU[:, cols]
        return a, e

    def gate(function, name_, a, e):
        y = act(function, a)
        return y, activation_bound(name_, a, y, u, e)

    keep = None if mask is None else np.asarray(mask, bool).reshape(batch, x.shape[1])
    zero_masked = bool(getattr(layer, "zero_output_for_mask", False))
    for t in steps:
        xt = x[:, t, :]
        before = (h, eh, c, ec)
        if name == "SimpleRNN":
            a, e = pre(xt, h, eh, slice(0, units))
            h, eh = gate(activation, act_name, a, e)
        elif name == "LSTM":
            parts = [slice(k * units, (k + 1) * units) for k in range(4)]
            (ai, ei), (af, ef), (ag, eg), (ao, eo) = [pre(xt, h, eh, p) for p in parts]
            i, ei = gate(recurrent, rec_name, ai, ei)
            f, ef = gate(recurrent, rec_name, af, ef)
            g, eg = gate(activation, act_name, ag, eg)
            o, eo = gate(recurrent, rec_name, ao, eo)
            c_new = f * c + i * g
            ec = (np.abs(f) * ec + np.abs(c) * ef + np.abs(i) * eg + np.abs(g) * ei
                  + 2 * u * (np.abs(f * c) + np.abs(i * g)) + u * np.abs(c_new))
            c = c_new
            tc, etc = gate(activation, act_name, c, ec)
            h = o * tc
            eh = np.abs(o) * etc + np.abs(tc) * eo + u * np.abs(h)
        else:  # GRU, reset_after=False: z, r, then the candidate on r * h
            z_cols, r_cols, h_cols = (slice(k * units, (k + 1) * units) for k in range(3))
            az, ez = pre(xt, h, eh, z_cols)
            ar, er = pre(xt, h, eh, r_cols)
            z, ez = gate(recurrent, rec_name, az, ez)
            r, er = gate(recurrent, rec_name, ar, er)
            rh = r * h
            erh = np.abs(r) * eh + np.abs(h) * er + u * np.abs(rh)
            ah, eah = pre(xt, rh, erh, h_cols)
            hh, ehh = gate(activation, act_name, ah, eah)
            h_new = z * h + (1 - z) * hh
            eh = (np.abs(z) * eh + (np.abs(h) + np.abs(hh)) * ez + np.abs(1 - z) * ehh
                  + 4 * u * (np.abs(h) + np.abs(hh)))
            h = h_new
        if keep is not None:  # a masked step: the states as they were; its output the previous one (or zeros)
            step = keep[:, t][:, None]
            h, eh, c, ec = (np.where(step, new, old) for new, old in zip((h, eh, c, ec), before))
            if zero_masked:
                sequence.append(np.where(step, h, 0.0))
                sequence_bounds.append(np.where(step, eh, 0.0))
                continue
        sequence.append(h)
        sequence_bounds.append(eh)
    if layer.return_sequences:  # go_backwards too: Keras returns the steps in the order computed
        result, bound = np.stack(sequence, 1), np.stack(sequence_bounds, 1)
    else:
        result, bound = h, eh
    if outputs is not None:
        scale = max(float(np.max(np.abs(outputs[0]), initial=0.0)), 1e-300)
        if outputs[0].shape != result.shape or np.max(np.abs(outputs[0] - result), initial=0.0) > 1e-9 * scale:
            return None  # the kit's recurrence is not this layer's (masking, a variant): no bound
        if getattr(layer, "return_state", False):
            states = [h, c] if name == "LSTM" else [h]
            state_bounds = [eh, ec] if name == "LSTM" else [eh]
            return [bound] + state_bounds if len(outputs) == 1 + len(states) else None
    return [bound]


@bound_of("Dot")
def _dot(layer, inputs, outputs, u, evaluate):
    """A dot product of n terms along the contracted axes: gamma(n) times the same product of
    |a| and |b| (normalize=True divides by norms first: no model here)."""
    if getattr(layer, "normalize", False):
        return None
    axes = layer.axes if isinstance(layer.axes, (list, tuple)) else [layer.axes, layer.axes]
    n = inputs[0].shape[axes[0]]
    scale = evaluate(layer, [np.abs(inputs[0]), np.abs(inputs[1])])[0]
    return [gamma(n + 1, u) * scale + u * np.abs(outputs[0])]


@bound_of("TimeDistributed")
def _time_distributed(layer, inputs, outputs, u, evaluate):
    """The wrapped layer's own bound, at every time step (the steps are independent)."""
    inner = layer.layer
    x = inputs[0]
    steps = x.reshape((-1,) + x.shape[2:])
    y = outputs[0].reshape((-1,) + outputs[0].shape[2:])
    entry = REGISTRY.get(type(inner).__name__)
    if entry is None:
        return None
    bounds = entry(inner, [steps], [y], u, evaluate)
    if bounds is None:
        return None
    if bounds is EXACT:
        return EXACT
    return [bounds[0].reshape(outputs[0].shape)]
