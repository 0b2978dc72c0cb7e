"""The runner contract. A runner is one module per runtime (Polygraphy's shape) with:

    NAME      the runtime its captures say ("node", "browser", ...): the report's column
    BACKENDS  the tfjs backends it can run, in report order
    SCRIPT    the command that makes its captures (named when one is stale)
    Options   a dataclass of the options only it reads (Chromium's switches, a device run's
              address, the Python model in memory), carried by Job.options
    run(job)  a generator of (backend, Capture | KitError), each as soon as it is there: every
              backend asked for (a device run: what its devices upload; a WebDriver run: each
              session's captures, and one KitError for the backends a failed session did not
              give, named "webgl,wasm"); a failure of the whole run (no Node, no browser)
              raises KitError

The caller saves each capture as it is yielded (steps.save_results), so a stop or a crash
later in the run loses none that arrived, and closes the generator however it ends, so the
runner's clean-up runs; a runner never saves. A runner whose backends run in a browser
implements nothing of the page: browsers.py holds the Browser contract (start, open(url),
alive, close), session.py the page-and-upload session they share.
Adding a runtime: a module here with those names, and its line in RUNNERS
(runners/__init__.py)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..wire import DEFAULTS


@dataclass
class Job:
    """What a step asks of a runner: the converted model, where staging files go, the
    backends, tfjs flags, timing (`repeat` predictions at most, a `budget` in seconds,
    the capture made `repeat_check` times in one session to record whether its bits repeat),
    metadata added to every capture, `go` (a steps.ReadySignal: start now, read the model
    once told), and `options`: the runner's own Options."""
    model_json: Optional[Path]
    out_dir: Optional[Path]
    backends: list
    flags: dict = field(default_factory=dict)
    repeat: int = DEFAULTS["repeat"]
    budget: float = DEFAULTS["budget"]
    metadata: dict = field(default_factory=dict)
    go: Optional[object] = None
    options: Optional[object] = None
    repeat_check: int = DEFAULTS["repeat_check"]

    def option(self, name, default):
        """The runner's option `name`, or `default` when the Job carries no Options (a Job
        built by --explain, say)."""
        return getattr(self.options, name, default) if self.options is not None else default


def results(job, runner):
    """{backend: Capture | KitError} of a whole run, for a caller that needs them all
    together (--explain): a failure of the whole run becomes each missing backend's."""
    from .. import KitError
    arrived = {}
    try:
        for backend, result in runner.run(job):
            arrived[backend] = result
    except KitError as error:
        for backend in job.backends:
            arrived.setdefault(backend, error)
    return arrived
