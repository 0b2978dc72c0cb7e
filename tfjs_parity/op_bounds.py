"""Rounding bounds per TensorFlow op, for graph models: the ops' counterpart of bounds.py's
registry of layers, built on the same facts and helpers (its docstring: sums within
gamma(n) times the sum of |terms| in any order, GPU elementary functions within the GLSL ES
3.00 / WGSL ULP figures, denormals flushed). Each entry's docstring is its reasoning
(docs/verdicts-and-bounds.md lists them).

An entry gets an OpCall: the node (its op and attributes, fused ops included), the exact
float64 values of every input this runtime fed it, the exact outputs, and `linear(arrays)`,
the node's dot product plus bias (its pre-activation) evaluated in float64 on other inputs
(|x|, |W|, |b|: the sum of |terms| a dot-product bound is made of). It returns one bound per
output, EXACT for ops that only move or select values, or None (no error model: "no bound").
"""
from dataclasses import dataclass

import numpy as np

from .bounds import ACTIVATIONS, EXACT, _softmax_bound, activation_bound, bilinear_bound, gamma


@dataclass
class OpCall:
    node: object          # the NodeDef, as converted (fused ops and their attributes)
    inputs: list          # every data input's value, float64 for float tensors
    outputs: list         # the exact outputs
    linear: object        # f([array or None per input]) -> the pre-activation in float64

    @property
    def op(self):
        return self.node.op

    def attr(self, key, default=None):
        if key not in self.node.attr:
            return default
        value = self.node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "list":
            return [x.decode() if isinstance(x, bytes) else x for x in (value.list.s or value.list.i or value.list.f)]
        result = getattr(value, kind)
        return result.decode() if isinstance(result, bytes) else result


REGISTRY = {}


def bound_of(*ops):
    def register(function):
        for op in ops:
            REGISTRY[op] = function
        return function
    return register


def op_bound(call, precision):
    """[bound per output] for `call`, or None (no error model for this op here)."""
    entry = REGISTRY.get(call.op)
    if entry is None:
        return None
    u = precision.unit_roundoff
    bounds = entry(call, u)
    if bounds is None:
        return None
    if bounds is EXACT:  # as for layers: float16 storage rounds even what is only moved
        rounding = 0.0 if u <= 2.0 ** -24 else u
        bounds = [rounding * np.abs(y) for y in call.outputs]
    return [np.broadcast_to(b, np.shape(y)) + precision.tiny for b, y in zip(bounds, call.outputs)]


@bound_of("Reshape", "Squeeze", "ExpandDims", "Transpose", "ConcatV2", "Concat", "Slice", "StridedSlice",
          "GatherV2", "Gather", "GatherNd", "Pack", "Unpack", "Pad", "PadV2", "MirrorPad", "Tile", "Split", "SplitV",
          "Relu", "Relu6", "MaxPool", "Max", "Min", "Maximum", "Minimum", "Neg", "Abs", "Select", "SelectV2",
          "ResizeNearestNeighbor", "SpaceToDepth", "DepthToSpace", "BroadcastTo", "Floor", "Ceil", "Round", "Sign",
          "ZerosLike", "OnesLike", "ClipByValue", "ReverseV2", "Fill", "OneHot", "Identity", "Snapshot",
          "StopGradient")
def _exact(call, u):
    """Moving, selecting, comparing: no arithmetic that rounds; the output must be exactly
    the exact answer's."""
    return EXACT


@bound_of("Cast")
def _cast(call, u):
    """An integer or float64 value stored as float32: one rounding."""
    return [u * np.abs(y) for y in call.outputs]


def _broadcast_bias(call, bias, x):
    if call.attr("data_format", "NHWC") in ("NCHW", "NCDHW") and x.ndim > 2:
        return bias.reshape([-1] + [1] * (x.ndim - 2))
    return bias


@bound_of("Add", "AddV2", "Sub", "BiasAdd")
def _add(call, u):
    """One correctly rounded addition (GLSL ES 3.00 and WGSL: +, - exact to the rounding):
    u |a + b| <= u (|a| + |b|)."""
    a, b = call.inputs[:2]
    if call.op == "BiasAdd":
        b = _broadcast_bias(call, b, a)
    return [u * (np.abs(a) + np.abs(b))]


@bound_of("AddN")
def _add_n(call, u):
    """n terms summed in any order: gamma(n - 1) sum |x_i|, plus the store."""
    total = sum(np.abs(x) for x in call.inputs)
    return [gamma(len(call.inputs) - 1, u) * total + u * np.abs(call.outputs[0])]


@bound_of("Mul", "Square", "LeakyRelu", "Prelu")
def _one_product(call, u):
    """One correctly rounded product (twice the unit roundoff of slack: a backend may scale
    by a rounded constant)."""
    return [2 * u * np.abs(call.outputs[0])]


@bound_of("SquaredDifference")
def _squared_difference(call, u):
    """(a - b) rounded, then squared and rounded: (1 + u)^2 (1 + u) - 1 < 4u relative."""
    return [4 * u * np.abs(call.outputs[0])]


@bound_of("RealDiv", "Div", "DivNoNan")
def _divide(call, u):
    """GPU division is 2.5 ULP (5u), then the store."""
    return [6 * u * np.abs(call.outputs[0])]


@bound_of("Rsqrt")
def _rsqrt(call, u):
    """inversesqrt: 2 ULP (4u), then the store."""
    return [5 * u * np.abs(call.outputs[0])]


@bound_of("Sqrt")
def _sqrt(call, u):
    """sqrt is inherited from 1/inversesqrt (GLSL ES 3.00): 2 + 2.5 ULP, then the store."""
    return [10 * u * np.abs(call.outputs[0])]


@bound_of("Log")
def _log(call, u):
    """3 ULP, or 2**-21 absolute in [0.5, 2] (8u in float32), then the store."""
    return [(7 * np.abs(call.outputs[0]) + 8) * u]


_ACTIVATION_OPS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Elu": "elu", "Selu": "selu", "Softplus": "softplus",
                   "Softsign": "softsign", "Exp": "exponential"}


@bound_of(*_ACTIVATION_OPS)
def _activation(call, u):
    """The activation's evaluation error on exact inputs: bounds.py's ACTIVATIONS."""
    error, _ = ACTIVATIONS[_ACTIVATION_OPS[call.op]]
    return [error(call.inputs[0], call.outputs[0], u) + u * np.abs(call.outputs[0])]


@bound_of("ResizeBilinear")
def _resize_bilinear(call, u):
    """A weighted sum of the 4 neighbours: bounds.py's bilinear_bound, with the op's own
    align_corners and half_pixel_centers."""
    height, width = np.shape(call.outputs[0])[1:3]
    return [bilinear_bound(call.inputs[0], height, width, u, bool(call.attr("align_corners", False)),
                           bool(call.attr("half_pixel_centers", False)))]


@bound_of("Erf")
def _erf(call, u):
    """Abramowitz & Stegun 7.1.26 in tfjs, within 180u absolute in float32 (bounds.py's gelu
    derivation), then the store."""
    return [(180 + np.abs(call.outputs[0])) * u]


@bound_of("Softmax")
def _softmax(call, u):
    """bounds.py's softmax bound over the last axis (TensorFlow's Softmax op)."""
    return [_softmax_bound(call.inputs[0], call.outputs[0], u, 0.0, -1)]


def _axes(call):
    x = call.inputs[0]
    axes = np.atleast_1d(call.inputs[1]).astype(int) % max(x.ndim, 1)
    return tuple(int(a) for a in axes), int(np.prod([x.shape[a] for a in axes]))


@bound_of("Mean")
def _mean(call, u):
    """A sum of n values and a division by n (or a product by 1/n, itself rounded): within
    gamma(n + 4) times the mean of |x|, plus the store."""
    axes, n = _axes(call)
    scale = np.mean(np.abs(call.inputs[0]), axis=axes, keepdims=bool(call.attr("keep_dims", False)))
    return [gamma(n + 4, u) * scale + u * np.abs(call.outputs[0])]


@bound_of("Sum")
def _sum(call, u):
    """n values summed in any order: gamma(n - 1) sum |x|, plus the store."""
    axes, n = _axes(call)
    scale = np.sum(np.abs(call.inputs[0]), axis=axes, keepdims=bool(call.attr("keep_dims", False)))
    return [gamma(max(n - 1, 0), u) * scale + u * np.abs(call.outputs[0])]


@bound_of("AvgPool")
def _avg_pool(call, u):
    """A sum over the window of k values and a division by k: gamma(k + 4) times the
    average of |x| (the op itself on |x|), plus the store."""
    k = int(np.prod(call.attr("ksize")))
    scale = call.linear([np.abs(call.inputs[0])])
    return [gamma(k + 4, u) * scale + u * np.abs(call.outputs[0])]


@bound_of("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
def _fused_batch_norm(call, u):
    """Inference batch norm, bounds.py's BatchNormalization reasoning: 7.5u S + u|y|, with
    S = (|x| + |mean|)|s| + |offset|, s = scale / sqrt(var + eps)."""
    if call.attr("is_training", False):
        return None
    x, scale, offset, mean, variance = call.inputs[:5]
    channels_first = call.attr("data_format", "NHWC").startswith("NC")
    shape = [-1] + [1] * (x.ndim - 2) if channels_first else [-1]

    def per_channel(v):
        return np.asarray(v, np.float64).reshape(shape)
    s = per_channel(scale) / np.sqrt(per_channel(variance) + float(call.attr("epsilon", 1e-3)))
    total = (np.abs(x) + np.abs(per_channel(mean))) * np.abs(s) + np.abs(per_channel(offset))
    return [7.5 * u * total + u * np.abs(call.outputs[0])]


def _products(call):
    """Products summed per output of a dot-product op, and whether a bias is added."""
    op = call.op
    fused = call.attr("fused_ops", []) or []
    biased = bool(fused) and fused[0] in ("BiasAdd", "Add")
    if op == "Einsum":
        return _einsum_terms(call.attr("equation"), call.inputs), False
    x, w = call.inputs[0], call.inputs[1]
    if op in ("MatMul", "_FusedMatMul"):
        return x.shape[0 if call.attr("transpose_a", False) else 1], biased
    if op.startswith("BatchMatMul"):
        return x.shape[-2 if call.attr("adj_x", False) else -1], biased
    if op in ("Conv2D", "_FusedConv2D", "Conv3D"):
        return int(np.prod(w.shape[:-1])), biased
    if op in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        return int(np.prod(w.shape[:2])), biased
    if op == "Conv2DBackpropInput":  # inputs: output sizes, filter [kh, kw, out, in], the input
        return int(np.prod(w.shape[:2])) * w.shape[3], False
    return None, False


def _einsum_terms(equation, inputs):
    """The products an Einsum sums per output: the sizes of the letters contracted away
    (letters before an ellipsis are the leading dimensions, after it the trailing ones)."""
    sources, _, result = equation.replace(" ", "").partition("->")
    sizes = {}
    for term, array in zip(sources.split(","), inputs):
        head, ellipsis, tail = term.partition("...")
        shape = np.shape(array)
        if not ellipsis:
            head, tail = "", term
        for letter, size in zip(head, shape[:len(head)]):
            sizes[letter] = size
        for letter, size in zip(tail, shape[len(shape) - len(tail):] if tail else ()):
            sizes[letter] = size
    contracted = set(sources.replace(",", "").replace(".", "")) - set(result)
    return int(np.prod([sizes[c] for c in contracted if c in sizes])) if contracted else 1


_FUSED_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


@bound_of("MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "_FusedConv2D",
          "Conv3D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative", "Conv2DBackpropInput", "Einsum")
def _dot_product(call, u):
    """z = sum of n products (+ the bias): within gamma(n + 2) S of exact, S the same op
    on |inputs| (|x|, |W|, |b|: the sum of |terms|), in any summation order, fused or
    tiled (Higham §3.1). Then the fused activation: its evaluation error on z plus its
    Lipschitz factor times z's error (bounds.activation_bound; LeakyRelu and Prelu: a
    product, 2u|y|, and the slope)."""
    n, biased = _products(call)
    if n is None:
        return None
    absolute = [None if not np.issubdtype(a.dtype, np.floating) else np.abs(a) for a in call.inputs]
    if call.op == "Conv2DBackpropInput":
        absolute[0] = None  # the output sizes
    scale = call.linear(absolute)
    z_bound = gamma(n + 2, u) * scale
    fused = call.attr("fused_ops", []) or []
    activation = [op for op in (fused[1:] if biased else fused) if op != "NoOp"] or ["linear"]
    y = call.outputs[0]
    if activation[0] in ("LeakyRelu", "Prelu"):
        slope = (abs(float(call.attr("leakyrelu_alpha", 0.2))) if activation[0] == "LeakyRelu"
                 else float(np.max(np.abs(call.inputs[3 if biased else 2]), initial=0.0)))
        return [2 * u * np.abs(y) + max(1.0, slope) * z_bound]
    name = _FUSED_ACTIVATIONS.get(activation[0], activation[0] if activation[0] == "linear" else None)
    if name is None:
        return None
    z = call.linear(list(call.inputs)) if name not in ("linear", "relu", "relu6") else y
    return [activation_bound(name, z, y, u, z_bound)]

