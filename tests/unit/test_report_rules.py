"""What the text report says (issue 32): names shortened so two nodes never read alike, a
column per capture headed with its runtime, the ratio column called a ratio, a graph model's
blocks headed by what runs it."""
from tfjs_parity.compare import Metrics
from tfjs_parity.pipeline.compare import headed
from tfjs_parity.plan import Plan
from tfjs_parity.report import _short, full_report, short_names, verdict_matrix
from tfjs_parity.verdict import LayerResult, RuntimeResult, Verdict

LONG = ["ArithmeticOptimizer/AddOpsRewrite_model/conv2d_30__xeno_compat__1",
        "ArithmeticOptimizer/AddOpsRewrite_model/depthwise_conv2d_30__xeno_compat__1",
        "ArithmeticOptimizer/AddOpsRewrite_model/conv2d_31__xeno_compat__1"]


def test_long_names_cut_alike_keep_more_of_their_tail_until_each_is_told_apart():
    assert _short(LONG[0]) == _short(LONG[1])  # what the report printed twice
    short = short_names(LONG + ["dense"])
    assert len(set(short.values())) == 4 and short["dense"] == "dense"
    assert short[LONG[0]].endswith("/conv2d_30__xeno_compat__1") and short[LONG[1]].endswith("_conv2d_30__xeno_compat__1")
    assert short[LONG[2]] == _short(LONG[2])  # no collision: the usual cut
    assert all(len(form) <= len(name) for name, form in short.items())


def _result(label, runtime, backend, names):
    metrics = Metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 1.0)
    return RuntimeResult(label, "float32", {"runtime": runtime, "backend": backend},
                         [LayerResult(name, metrics, metrics, 0.25, 1e-7, Verdict.ROUNDING, "") for name in names])


def test_each_column_is_headed_with_its_runtime_and_backend_and_the_ratio_is_called_one():
    results = [_result("python/tensorflow", "python", "tensorflow", LONG), _result("node/wasm", "node", "wasm", LONG),
               _result("browser/wasm", "browser", "wasm", LONG)]
    matrix = verdict_matrix(results).splitlines()
    assert matrix[1].split() == ["layer", "python/tensorflow", "node/wasm", "browser/wasm"]
    rows = [line.split()[0] for line in matrix[2:]]
    assert len(set(rows)) == 3, rows
    report = full_report(results, {}, [])
    assert "| x bound  verdict" in report and "|  bound  verdict" not in report
    assert "0.25  float32 rounding" in report


def test_a_graph_model_s_blocks_are_headed_by_what_runs_it():
    layers, graph = Plan([], [], kind="layers"), Plan([], [], kind="graph")
    assert headed("tf.Keras Python vs tfjs Node", layers) == "tf.Keras Python vs tfjs Node"
    assert headed("tf.Keras Python vs tfjs Node", None) == "tf.Keras Python vs tfjs Node"
    assert headed("tf.Keras Python vs tfjs Node", graph) == "TensorFlow Python (graph model) vs tfjs Node"


def test_the_quantization_table_tells_long_weight_names_apart():
    from tfjs_parity.report import quantization_tables
    stem = "StatefulPartitionedCall/model/ArithmeticOptimizer/conv2d_3"
    names = [f"{stem}0/kernel__xeno_compat__1", f"{stem}1/kernel__xeno_compat__1"]
    assert _short(names[0]) == _short(names[1])  # the plain cut would print two rows alike
    rows = [{"weight": name, "dtype": "uint8", "step": 0.01, "largest_error_steps": 0.5, "within": True}
            for name in names]
    table = quantization_tables(rows, None, [])
    shown = [line.split()[0] for line in table.splitlines()[2:]]
    assert len(set(shown)) == 2 and all(form in short_names(names).values() for form in shown), shown


def test_a_reproducer_writes_nan_and_infinities_as_javascript_reads_them_back():
    """JSON has no NaN or infinities; null would come back as 0 in tf.tensor (a masked -inf
    softmax input would read [0, 1, 2] and every backend look wrong): strings Number() reads."""
    import numpy as np
    from tfjs_parity.repro import _tensor
    encoded = _tensor(np.array([1.5, np.nan, np.inf, -np.inf], np.float32))
    assert encoded["data"] == [1.5, "NaN", "Infinity", "-Infinity"] and encoded["dtype"] == "float32"
    assert _tensor(np.array([True, False]))["dtype"] == "bool"
