"""One module per runtime, each with NAME, BACKENDS, SCRIPT and run(job) (the contract:
runners/base.py). RUNNERS is the registry, in report column order: a new runtime is its
module and one line here."""
from . import (browser_runner, device_runner, firefox_runner, node_runner, python_runner, webdriver_runner,
               webkit_runner)
from .base import Job  # noqa: F401 (what a step hands a runner)

RUNNERS = {module.NAME: module for module in (python_runner, node_runner, browser_runner, firefox_runner,
                                              webkit_runner, webdriver_runner, device_runner)}
REFERENCE_RUNTIME = "reference"  # the float64 capture: made by step 1, beside Python's


def script_of(runtime):
    """The command that makes a capture of `runtime` again, or None for one the kit does not know."""
    if runtime == REFERENCE_RUNTIME:
        runtime = python_runner.NAME
    return RUNNERS[runtime].SCRIPT if runtime in RUNNERS else None


def column_order(capture):
    """Sort key for reports: runtimes in RUNNERS order, each runtime's backends in its runner's
    order, variants (and devices) after the plain run."""
    runtime = capture.metadata.get("runtime")
    names = list(RUNNERS)
    backends = list(getattr(RUNNERS.get(runtime), "BACKENDS", ()))
    backend = capture.metadata.get("backend")
    return (names.index(runtime) if runtime in names else len(names),
            capture.metadata.get("device") or "" if runtime in (device_runner.NAME, webdriver_runner.NAME) else "",
            backends.index(backend) if backend in backends else len(backends),
            capture.metadata.get("variant") or "")
