"""How long a runtime times the model as shipped (issue 34): warm predictions only while the
next one fits in the budget by the last one's time, at least one; the report says when the
budget cut the count. The clock here is a fake one: no test waits for real time."""
from tfjs_parity.capture import Capture
from tfjs_parity.report import _ms
from tfjs_parity.runners import python_runner


def timed(seconds_per_prediction, repeat, budget, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(python_runner.time, "perf_counter", lambda: clock[0])

    def predict():
        clock[0] += seconds_per_prediction
    return python_runner.time_predictions(predict, repeat, budget)


def test_a_model_at_10_s_a_prediction_gets_its_cold_figure_and_one_warm_one(monkeypatch):
    timing = timed(10.0, 10, 10.0, monkeypatch)
    assert timing["warmup_ms"] == 10000 and timing["runs_ms"] == [10000]


def test_warm_runs_go_on_while_the_next_fits_and_stop_at_repeat(monkeypatch):
    assert len(timed(0.5, 10, 2.0, monkeypatch)["runs_ms"]) == 4   # 0.5, 1, 1.5, 2 s: a fifth would not fit
    assert len(timed(0.001, 10, 10.0, monkeypatch)["runs_ms"]) == 10  # a fast model: --repeat decides


def test_the_table_says_when_the_budget_cut_the_count():
    def capture(runs, repeat):
        return Capture({"timing": {"median_ms": 10000.0, "runs_ms": [10000.0] * runs, "repeat": repeat}})
    assert _ms(capture(1, 10)) == "10000.00 (1 run)"
    assert _ms(capture(3, 10)) == "10000.00 (3 runs)"
    assert _ms(capture(10, 10)) == "10000.00"
    assert _ms(capture(1, 10), "cold_ms") == "-"
