"""One module per runtime, each with NAME and run(...) -> Capture."""
from . import browser_runner, node_runner, python_runner

RUNNERS = {module.NAME: module for module in (python_runner, node_runner, browser_runner)}
