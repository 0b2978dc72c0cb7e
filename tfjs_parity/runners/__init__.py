"""One module per runtime, each with NAME and run(...) -> Capture (the device runner also
runs Firefox here, whose captures say runtime "firefox")."""
from . import browser_runner, device_runner, node_runner, python_runner

RUNNERS = {module.NAME: module for module in (python_runner, node_runner, browser_runner, device_runner)}
# report columns: the runtimes here first, then Firefox (the same backends as Chromium), then devices
COLUMN_RUNTIMES = ["python", "node", "browser", device_runner.FIREFOX, device_runner.NAME]


def column_order(capture):
    """Sort key for reports: runtimes in COLUMN_RUNTIMES order, each runtime's backends in its
    runner's order, variants (and devices) after the plain run."""
    runtime = capture.metadata.get("runtime")
    runner = RUNNERS.get("browser" if runtime == device_runner.FIREFOX else runtime)
    backends = list(getattr(runner, "BACKENDS", ()))
    backend = capture.metadata.get("backend")
    return (COLUMN_RUNTIMES.index(runtime) if runtime in COLUMN_RUNTIMES else len(COLUMN_RUNTIMES),
            capture.metadata.get("device") or "" if runtime == device_runner.NAME else "",
            backends.index(backend) if backend in backends else len(backends),
            capture.metadata.get("variant") or "")
