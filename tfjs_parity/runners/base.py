"""The runner contract. A runner is one module per runtime (Polygraphy's shape) with:

    NAME      the runtime its captures say ("node", "browser", ...): the report's column
    BACKENDS  the tfjs backends it can run, in report order
    SCRIPT    the command that makes its captures (named when one is stale)
    run(job)  -> {backend: Capture | KitError}: every backend asked for, a capture or why not

The step script builds the Job, and saves what run returns (steps.save_results). A runner
whose captures are uploaded by a browser it does not drive (Firefox, devices) saves each one
as it arrives, through the step's own `job.save`, so a stop loses nothing; it returns {}.
Adding a runtime: a module here with those four names, and its line in RUNNERS
(runners/__init__.py)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Job:
    """What a step asks of a runner: the converted model, where results and staging files go,
    the backends, tfjs flags, timing (repeat, budget in seconds), metadata added to every
    capture, `go` (a steps.ReadySignal: start now, read the model once told), `save`
    (save(backend, capture, variant): saves it, or raises KitError; for the runners that save
    as captures arrive: Firefox, devices), `repeat_check` (the capture made that many times in
    one session, to record whether its bits repeat), and `options`
    that only one runner reads (Chromium's switches and timeouts, a device run's address)."""
    model_json: Path
    out_dir: Path
    backends: list
    flags: dict = field(default_factory=dict)
    repeat: int = 10
    budget: float = 10.0
    metadata: dict = field(default_factory=dict)
    go: Optional[object] = None
    save: Optional[Callable] = None
    options: dict = field(default_factory=dict)
    repeat_check: int = 2  # the capture made this many times: are the bits the same each time?
