"""The runner contract (runners/base.py): every runner has a name, its backends, the command
that makes its captures, and run(job); the report's columns come from the registry."""
import inspect

import pytest

from tfjs_parity.capture import Capture
from tfjs_parity.runners import RUNNERS, column_order, script_of


@pytest.mark.parametrize("name", list(RUNNERS))
def test_every_runner_has_the_contract_s_names(name):
    runner = RUNNERS[name]
    assert runner.NAME == name and runner.BACKENDS and all(isinstance(b, str) for b in runner.BACKENDS)
    assert runner.SCRIPT.split()[0].endswith(".py") and callable(runner.run)
    if name != "python":  # step 1's runner runs the model in-process (python_runner's docstring)
        assert list(inspect.signature(runner.run).parameters)[0] == "job"


def test_columns_follow_the_registry_then_each_runner_s_backends():
    def capture(runtime, backend, **more):
        return Capture(dict(runtime=runtime, backend=backend, **more))
    shuffled = [capture("device", "cpu", device="b"), capture("firefox", "wasm"), capture("browser", "webgl"),
                capture("node", "wasm"), capture("device", "cpu", device="a"), capture("browser", "webgl", variant="f16"),
                capture("node", "tensorflow"), capture("firefox", "webgl"), capture("unknown", "x")]
    labels = [(c.metadata["runtime"], c.metadata["backend"], c.metadata.get("device") or c.metadata.get("variant"))
              for c in sorted(shuffled, key=column_order)]
    assert labels == [("node", "tensorflow", None), ("node", "wasm", None), ("browser", "webgl", None),
                      ("browser", "webgl", "f16"), ("firefox", "webgl", None), ("firefox", "wasm", None),
                      ("device", "cpu", "a"), ("device", "cpu", "b"), ("unknown", "x", None)]


def test_the_float64_reference_is_made_again_by_step_1():
    assert script_of("reference") == script_of("python") == "create_keras_model.py"
    assert script_of("no such runtime") is None
