"""The graph kind's local exact answer: each point of the float64 graph alone, on the inputs
one runtime fed it, in a small TensorFlow session of its own (graph_exec.local_graph), with the
node's rounding bound on those inputs (op_bounds.py). graph_model.local_reference builds it
for a converted model."""
import collections
import threading

import numpy as np

from .. import KitError
from ..model import held_stderr
from . import graph_exec
from .graph_exec import CONTROL_FLOW, Session, data_inputs, split_tensor


class LocalReference:
    """Each point of the float64 graph, evaluated on the inputs one runtime fed it: a small
    session per point (graph_exec.local_graph), fed each capture's values.

    The sessions are kept for the last SESSIONS points only (about 135 kB each): captures are
    judged two at a time, in the plan's order, so the pair shares each session and memory stays
    flat in the number of nodes (100k nodes would hold 13 GB of sessions); a later pair builds
    them again (about 1.5 ms a point)."""

    SESSIONS = 512

    def __init__(self, graph, plan, reference):
        from .. import op_bounds
        self.graph, self.plan, self.reference, self.op_bounds = graph, plan, reference, op_bounds
        self.float64 = graph_exec.for_float64(graph.graph_def)
        self.by_name = {node.name: node for node in self.float64.node}
        self.captured = {p.layer: p.outputs for p in plan.points}
        self.inputs = {spec.name for spec in plan.inputs}
        # point -> (Session, {original tensor: its placeholder}, the node's inputs there), the
        # most recently used last; two judges share it
        self.locals = collections.OrderedDict()
        self.lock = threading.Lock()
        self.exact_fed = {}
        with held_stderr():  # TensorFlow's one-time native logs (its first session run), shown only on failure
            from tensorflow.core.framework import graph_pb2
            warm = graph_pb2.GraphDef()
            graph_exec._const(warm, "warm", 0.0, graph_exec.DT_DOUBLE)
            Session(warm).run({}, ["warm"])

    def _local(self, point):
        with self.lock:
            if point.name in self.locals:
                self.locals.move_to_end(point.name)
                return self.locals[point.name]
        graph_def, fed = graph_exec.local_graph(self.float64, self.by_name, point.layer, self.captured,
                                                self.inputs)
        # the converted node's own inputs (its unfused parts read them), as this graph names them
        inputs = [fed.get(graph_exec.tensor_name(name), name) for name in data_inputs(self.graph.nodes[point.layer])]
        local = (Session(graph_def, f"the float64 graph at node {point.layer!r}"), fed, inputs)
        with self.lock:
            # an evicted session is not closed here: the other judge may be running it (it is
            # freed with its last reference)
            local = self.locals.setdefault(point.name, local)
            self.locals.move_to_end(point.name)
            while len(self.locals) > self.SESSIONS:
                self.locals.popitem(last=False)
        return local

    def evaluate_capture(self, capture, precisions):
        from ..reference import as_float64
        inputs = capture.inputs
        base = {}
        for spec in self.plan.inputs:
            if spec.name not in inputs:
                raise KitError(f"{capture.label}: its metadata holds no input {spec.name!r}")
            base[spec.name] = as_float64([inputs[spec.name]])[0]
        for point in self.plan.points:
            node = self.graph.nodes[point.layer]
            session, fed, input_names = self._local(point)
            feeds = {name: value for name, value in base.items() if session.has(name)}
            for tensor, placeholder in fed.items():  # every point's output it reads (through a branch too)
                source, index = split_tensor(tensor)
                own = capture.outputs(source)[index]
                exact = self.reference.outputs(source)[index]
                if np.shape(own) != np.shape(exact):
                    self.exact_fed.setdefault(id(capture), {})[point.name] = source
                    own = exact
                feeds[placeholder] = np.asarray(own, np.float64)
            # a Merge's or Exit's inputs are inside a branch or loop: one has no value (and no
            # error model reads them)
            # (a Merge's or Exit's inputs: see above; a TensorList's or resource's handle is no array)
            read = [] if node.op in CONTROL_FLOW else [name for name in input_names if self._numeric(session, name)]
            fetched = session.run(feeds, [f"{node.name}:{k}" for k in range(point.outputs)] + read)
            outputs = [np.asarray(a, np.float64) for a in fetched[:point.outputs]]
            values = dict(zip(read, fetched[point.outputs:]))
            arrays = [np.asarray(values[name]) if name in values else None for name in input_names] if read else []
            call = self.op_bounds.OpCall(node, arrays, outputs, self._linear(session, node, input_names, feeds))
            with np.errstate(all="ignore"):
                bounds = {p.name: self.op_bounds.op_bound(call, p) for p in precisions}
            yield point, outputs, bounds

    @staticmethod
    def _numeric(session, name):
        try:
            dtype = session.dtype(name)
        except (KeyError, ValueError):
            return False
        return dtype.is_floating or dtype.is_integer or dtype.is_bool

    @staticmethod
    def _linear(session, node, input_names, feeds):
        """f(arrays) -> the node's pre-activation (its dot product and bias) on `arrays` in
        place of its inputs."""
        # the dot product and its bias: the bias is a term of the sum (wasm's XNNPACK starts each
        # sum at it), so S holds |b|. An unfused node with a bias and no activation is its BiasAdd.
        fused = graph_exec.fused_ops(node)
        biased = bool(fused) and fused[0] in ("BiasAdd", "Add")
        if session.has(f"{node.name}/kit_bias"):
            target = f"{node.name}/kit_bias"
        elif biased or not session.has(f"{node.name}/kit_linear"):
            target = node.name
        else:
            target = f"{node.name}/kit_linear"

        def linear(arrays):
            given = dict(feeds)
            given.update({name: a for name, a in zip(input_names, arrays) if a is not None})
            return np.asarray(session.run(given, [target])[0], np.float64)
        return linear
