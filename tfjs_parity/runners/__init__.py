"""One module per runtime, each with NAME and run(...) -> Capture."""
from . import browser_runner, node_runner, python_runner

RUNNERS = {module.NAME: module for module in (python_runner, node_runner, browser_runner)}


def column_order(capture):
    """Sort key for reports: runtimes in registry order, each runtime's backends in its
    runner's order, variants after the plain run."""
    runtime = capture.metadata.get("runtime")
    backends = list(getattr(RUNNERS.get(runtime), "BACKENDS", ()))
    backend = capture.metadata.get("backend")
    return (list(RUNNERS).index(runtime) if runtime in RUNNERS else len(RUNNERS),
            backends.index(backend) if backend in backends else len(backends),
            capture.metadata.get("variant") or "")
