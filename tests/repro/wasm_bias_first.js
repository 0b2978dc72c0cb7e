// Reproducer: the tfjs wasm backend (4.22, XNNPACK) adds a fused conv's bias FIRST: each
// output's float32 accumulator starts at the bias, then takes the products one at a time
// (depthwise 3x3 taps column by column: kw outer, kh inner; 1x1 conv: input channels in
// order), every product and addition rounded to float32, no FMA. That is a correct float32
// evaluation of sum(x*w) + b: Higham's bound gamma(n+1) (sum|x||w| + |b|) holds for it.
// A backend that adds the bias LAST (tfjs cpu, tfjs-node's TensorFlow) errs only u|y| for the bias.
//
// The kit's first graph bound was wrong, not wasm: for a biased, activation-free fused node
// LocalReference._linear (tfjs_parity/kinds/graph_model.py) took `<node>/kit_linear` -- the
// dot product WITHOUT its bias -- as S, so it applied gamma(n+2) sum|x||w| + u|y|, not
// op_bounds' documented gamma(n+2) (sum|x||w| + |b|). When |b| is large beside sum|x||w|
// (a folded batch norm's offset), a bias-first sum exceeded that by up to about n/2 times,
// and wasm was called a mismatch on EfficientNetB0 and MobileNetV3. Fixed; this script shows
// the evidence without the kit (tests/test_tfjs_bugs.py asserts it):
//
//   node tests/repro/wasm_bias_first.js
//
// Cases (each on tensorflow, cpu and wasm; exact answer in float64 here, compensated sums):
//   block1a      EfficientNetB0's efficientnetb0/block1a_dwconv/depthwise as wasm ran it inside
//                the graph (tests/repro/wasm_bias_first_block1a.bin, from wasm_bias_first_extract.py):
//                tf.fused.depthwiseConv2d 3x3 stride 1 SAME + bias
//   synth_dw     x = 1, b = [1, -3], 3x3 depthwise weights just under half an ulp of b:
//                added to b one by one, each is rounded away
//   synth_1x1    the same for tf.fused.conv2d 1x1 (16 input channels): the "FusedBatchNormV3"
//                points of the graph are such convs (_FusedConv2D + BiasAdd, the BN folded)
//   synth_dw_unfused  control: tf.add(tf.depthwiseConv2d(x, w), b), the bias added last
// Printed per case and backend: max err/kit_bound, err/doc_bound, err/(u S) with
// S = sum|x||w| + |b|, the worst element (by kit ratio) and whether it is at a padded border,
// |b|/sum|x||w| there, and which float32 evaluation order reproduces the backend bit for bit.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-node');  // registers `tensorflow`; brings `cpu`
require('@tensorflow/tfjs-backend-wasm');      // registers `wasm`

const BACKENDS = ['tensorflow', 'cpu', 'wasm'];
const U = 2 ** -24;
const gamma = (n) => n * U / (1 - n * U);
const f32 = Math.fround;

// --- a plain NHWC convolution in float64: per output, its list of (x, w) terms and bias -------
function terms(x, xs, w, ws, b, stride, pad, depthwise) {
  const [N, H, W, C] = xs, [KH, KW] = ws, CO = depthwise ? C : ws[3];
  const OH = pad === 'same' ? Math.ceil(H / stride) : Math.floor((H - KH) / stride) + 1;
  const OW = pad === 'same' ? Math.ceil(W / stride) : Math.floor((W - KW) / stride) + 1;
  const PT = pad === 'same' ? Math.floor(Math.max((OH - 1) * stride + KH - H, 0) / 2) : 0;
  const PL = pad === 'same' ? Math.floor(Math.max((OW - 1) * stride + KW - W, 0) / 2) : 0;
  const out = [];  // {pos, border, t: [[x, w, kh, kw, ci]], b}
  for (let n = 0; n < N; n++) for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
    for (let co = 0; co < CO; co++) {
      const t = []; let border = false;
      for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
        const ih = oh * stride + kh - PT, iw = ow * stride + kw - PL;
        if (ih < 0 || iw < 0 || ih >= H || iw >= W) { border = true; continue; }
        const cis = depthwise ? [co] : [...Array(C).keys()];
        for (const ci of cis) {
          const xv = x[((n * H + ih) * W + iw) * C + ci];
          const wv = depthwise ? w[(kh * KW + kw) * C + co] : w[((kh * KW + kw) * C + ci) * CO + co];
          t.push([xv, wv, kh, kw, ci]);
        }
      }
      out.push({pos: [n, oh, ow, co], border, t, b: b[co]});
    }
  }
  return {out, shape: [N, OH, OW, CO], n: KH * KW * (depthwise ? 1 : C)};
}

function exactSum(values) {  // Neumaier: float64 products are exact (24 + 24 bits), the sum nearly so
  let s = 0, c = 0;
  for (const v of values) { const t = s + v; c += Math.abs(s) >= Math.abs(v) ? (s - t) + v : (v - t) + s; s = t; }
  return s + c;
}

// float32 evaluation orders, each product and sum rounded to float32
const ORDERS = {
  'bias last, row-major taps': (o) => f32(o.t.reduce((a, [x, w]) => f32(a + f32(x * w)), 0) + o.b),
  'bias first, row-major taps': (o) => o.t.reduce((a, [x, w]) => f32(a + f32(x * w)), f32(o.b)),
  'bias first, column-major taps (XNNPACK)': (o) => [...o.t].sort((p, q) => p[3] - q[3] || p[2] - q[2] || p[4] - q[4])
    .reduce((a, [x, w]) => f32(a + f32(x * w)), f32(o.b)),
  'float64 accumulate, one rounding': (o) => f32(exactSum([...o.t.map(([x, w]) => x * w), o.b])),
};

function judge(y, ref) {
  const r = {kit: 0, doc: 0, uS: 0};
  let worst = null;
  ref.out.forEach((o, i) => {
    const exact = exactSum([...o.t.map(([x, w]) => x * w), o.b]);
    const S0 = exactSum(o.t.map(([x, w]) => Math.abs(x * w)));
    const S = S0 + Math.abs(o.b);
    const err = Math.abs(y[i] - exact);
    const kit = err / (gamma(ref.n + 2) * S0 + U * Math.abs(exact) + 1e-38);  // what the kit applies
    const doc = err / (gamma(ref.n + 2) * S + 1e-38);                        // op_bounds' docstring
    if (kit > r.kit) { r.kit = kit; worst = {pos: o.pos, border: o.border, b_over_S0: Math.abs(o.b) / S0}; }
    r.doc = Math.max(r.doc, doc); r.uS = Math.max(r.uS, err / (U * S + 1e-38));
  });
  const sameAs = Object.entries(ORDERS).filter(([, f]) => ref.out.every((o, i) => f(o) === y[i])).map(([k]) => k);
  return {max_err_over_kit_bound: +r.kit.toFixed(3), max_err_over_doc_bound: +r.doc.toFixed(3),
          max_err_over_uS: +r.uS.toFixed(2), worst_by_kit: worst, bit_identical_to: sameAs};
}

function synthetic(depthwise) {
  const b = Float32Array.from([1, -3]);
  const xs = depthwise ? [1, 4, 4, 2] : [1, 2, 2, 16], ws = depthwise ? [3, 3, 2, 1] : [1, 1, 16, 2];
  const x = new Float32Array(xs.reduce((p, q) => p * q)).fill(1);
  const w = new Float32Array(ws.reduce((p, q) => p * q));
  const ulp = [2 ** -23, 2 ** -22];  // of 1 and of 3; each weight 0.40..0.48 of it, the bias's sign
  // depthwise [3, 3, 2, 1]: w[tap * 2 + c], tap = kh * 3 + kw; 1x1 [1, 1, 16, 2]: w[ci * 2 + co]
  for (let k = 0; k < (depthwise ? 9 : 16); k++) {
    for (let co = 0; co < 2; co++) w[k * 2 + co] = f32(Math.sign(b[co]) * (0.40 + 0.005 * k) * ulp[co]);
  }
  return {x, xs, w, ws, b, stride: 1, pad: 'same', depthwise};
}

function block1a() {
  const file = path.join(__dirname, 'wasm_bias_first_block1a.bin');
  const all = new Float32Array(fs.readFileSync(file).buffer.slice(0));
  const xs = [1, 16, 16, 32], ws = [3, 3, 32, 1], nx = 8192, nw = 288;
  return {x: all.slice(0, nx), xs, w: all.slice(nx, nx + nw), ws, b: all.slice(nx + nw, nx + nw + 32),
          graphY: all.slice(nx + nw + 32), stride: 1, pad: 'same', depthwise: true};
}

async function run(backend, fn) {
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} unavailable`);
  await tf.ready();
  return tf.tidy(fn).data();
}

async function main() {
  const cases = {block1a: block1a(), synth_dw: synthetic(true), synth_1x1: synthetic(false)};
  cases.synth_dw_unfused = {...cases.synth_dw, unfused: true};
  for (const [name, c] of Object.entries(cases)) {
    const ref = terms(c.x, c.xs, c.w, c.ws, c.b, c.stride, c.pad, c.depthwise);
    for (const backend of BACKENDS) {
      const y = await run(backend, () => {
        const x = tf.tensor(c.x, c.xs), w = tf.tensor(c.w, c.ws), b = tf.tensor1d(c.b);
        if (c.unfused) return tf.add(tf.depthwiseConv2d(x, w, c.stride, c.pad), b);
        const args = {x, filter: w, strides: c.stride, pad: c.pad, bias: b};
        return c.depthwise ? tf.fused.depthwiseConv2d(args) : tf.fused.conv2d(args);
      });
      const row = {case: name, backend, n: ref.n, ...judge(y, ref)};
      if (c.graphY) row.bit_identical_to_wasm_in_graph = y.every((v, i) => v === c.graphY[i]);
      console.log(JSON.stringify(row));
    }
  }
}

main().catch((error) => { console.error(error); process.exit(1); });
