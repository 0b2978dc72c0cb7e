"""tfjs in headless Chromium, driven by pyppeteer: serve the page and model on loopback
(page.py), run inference_in_browser.html in one Chromium (chromium.py) a fresh page per
backend, and take the capture each page uploads (binary, to a one-time path of this run's
server: nothing big passes through DevTools). Also the bridge between pyppeteer's asyncio
and the kit's signals: a stop at any moment leaves no Chromium and one line."""
import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError
from ..progress import PROGRESS_LINE, Progress
from ..server import PageServer
from ..uploads import Uploads
from ..wire import BROWSER_BACKENDS
from .browsers import LAUNCH_TIMEOUT, PAGE_TIMEOUT, NoModel, one_line
from .chromium import SIGNALS, Chromium, chromium_switches, connect, find_chromium
from .page import check_model, check_servable, check_tfjs_files, model_routes, page_routes, read_upload, routes_for

NAME = "browser"
SCRIPT = "run_browser.py"
BACKENDS = BROWSER_BACKENDS  # wire.json's: the page's


CHOSEN_BY = "--browser chromium (the default)"
FLAGS = ("chromium_arg",)  # the flags only this runner reads


@dataclass
class Options:
    chromium_args: tuple = ()         # extra switches, after the kit's own
    timeout: float = PAGE_TIMEOUT     # seconds each backend's page may take
    launch_timeout: float = LAUNCH_TIMEOUT  # seconds Chromium may take to start


def add_arguments(parser):
    parser.add_argument("--chromium-arg", action="append", default=[], metavar="SWITCH",
                        help="extra Chromium switch, repeatable (e.g. --chromium-arg=--disable-webgl)")


def options(args):
    return Options(tuple(args.chromium_arg), args.timeout, args.launch_timeout)


def run(job):
    """Run the tfjs model at job.model_json in one headless Chromium, once per backend (each in
    a fresh page); yield (backend, Capture backed by a file in job.out_dir, or the KitError
    that backend raised) as each page ends.

    job.flags are tfjs flags set before the backend starts; job.metadata is added to each
    capture's; job.options: Options.

    With job.go (a steps.ReadySignal): Chromium starts at once, and the first backend's page loads tfjs,
    starts its backend and self-tests it, then waits for go's line before the model is served
    and read (NoModel when stdin ends instead); the timeout counts from then.

    The model's folder is served from its parent (the results folder): a model file reached
    through a symlink below it is refused, and so is a model folder that is a symlink."""
    go, backends, staging_dir = job.go, job.backends, job.out_dir
    timeout = job.option("timeout", PAGE_TIMEOUT)
    launch_timeout = job.option("launch_timeout", LAUNCH_TIMEOUT)
    if go is None:
        model_json = check_servable(job.model_json)
    else:
        check_tfjs_files()
        model_json = Path(job.model_json)
    switches = chromium_switches(job.option("chromium_args", ()))
    executable = find_chromium()
    page = {"model": "model/model.json", "flags": json.dumps(job.flags or {}), "repeat": job.repeat,
            "budget": job.budget, "metadata": json.dumps(job.metadata or {}), "repeat_check": job.repeat_check}
    import pyppeteer  # noqa: F401 (before Chromium starts: its import takes a moment)
    _quiet_libraries()
    uploads = Uploads(staging_dir, backends)
    caught = []  # a signal that stopped the run, raised again once everything is cleaned up
    try:
        with PageServer(page_routes() if go else routes_for(model_json), uploads,
                        roots=[model_json.parent.parent]) as server, \
                Chromium(executable, switches, launch_timeout) as chromium:
            async def model_ready():
                while not go.arrived():
                    await asyncio.sleep(0.01)
                if not go.wait():
                    raise NoModel(str(go.missing()))
                server.add_routes(model_routes(check_model(model_json)))
            yield from _drive(_pages(chromium, server, uploads, backends, page, timeout,
                                     model_ready if go else None), chromium, caught)
    finally:
        if caught:
            _raise_again(caught[0])


def page_results(routes, pages, expression, timeout=PAGE_TIMEOUT, chromium_args=(), launch_timeout=LAUNCH_TIMEOUT):
    """Open each of `pages` (a path and query on a server of `routes`) in one headless
    Chromium and return [the page's `expression` once it is defined, or the KitError of that
    page] (a standalone page, the reproducer's: no upload, no kit script)."""
    executable = find_chromium()
    caught = []
    try:
        with PageServer(routes) as server, Chromium(executable, chromium_switches(chromium_args),
                                                     launch_timeout) as chromium:
            async def all_pages():
                browser = await asyncio.wait_for(connect(chromium.endpoint), chromium.launch_timeout)
                results = []
                try:
                    for path in pages:
                        try:
                            results.append(await _guarded(chromium, _page_value(browser, f"{server.url}{path}",
                                                                                 expression, timeout), path))
                        except KitError as error:
                            results.append(error)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(browser.close(), 5)
                return results
            return _run_async(all_pages(), chromium, caught)
    finally:
        if caught:
            _raise_again(caught[0])


async def _page_value(browser, url, expression, timeout):
    import pyppeteer
    page = await browser.newPage()
    try:
        await page.goto(url, timeout=int(timeout * 1000))
        await page.waitForFunction(f"{expression} !== undefined", timeout=int(timeout * 1000))
        return await page.evaluate(expression)
    except pyppeteer.errors.PyppeteerError as error:
        raise KitError(f"{url}: {one_line(str(error))}") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(page.close(), 5)


async def _pages(chromium, server, uploads, backends, page, timeout, model_ready=None):
    """Each backend's page in turn, yielding (backend, Capture | KitError) as each ends; the
    first waits for `model_ready()` (when given) once started up, before it reads the model."""
    import pyppeteer
    import websockets
    try:
        browser = await asyncio.wait_for(connect(chromium.endpoint),
                                         chromium.launch_timeout)
    except (asyncio.TimeoutError, OSError, pyppeteer.errors.PyppeteerError,
            websockets.exceptions.WebSocketException) as error:
        raise KitError(f"could not connect to {chromium.name} at {chromium.endpoint}: "
                       f"{one_line(str(error)) or type(error).__name__}") from None
    try:
        for number, backend in enumerate(backends):
            query = urlencode(dict(page, backend=backend, upload=uploads.path(backend),
                                   **({"wait": 1} if model_ready else {})))
            try:
                try:
                    await _capture_page(chromium, browser, f"{server.url}/inference_in_browser.html?{query}", backend,
                                        timeout, model_ready)
                    model_ready = None  # the model is there: the next backends' pages read it at once
                except (pyppeteer.errors.PyppeteerError, ConnectionError, OSError) as error:
                    # a crashed page or browser, a dropped DevTools connection
                    ended = chromium.exited(wait=1.0)
                    raise KitError(f"backend {backend}: " + (ended or f"the page failed ({one_line(str(error))})")) \
                        from None
                if uploads.completed(backend) is None:
                    raise KitError(f"backend {backend}: the page finished but its capture did not arrive")
                result = read_upload(uploads, backend)
            except NoModel:
                raise
            except KitError as error:
                if str(error).startswith("failed: ") and chromium.exited() is None:
                    # it could not say where (a WASM trap): a fresh page finds the point (locate mode)
                    error = await _locate(chromium, browser, server, page, backend, timeout) or error
                result = error
            if isinstance(result, KitError) and chromium.exited():  # gone: the other backends cannot run
                for other in backends[number:]:
                    yield other, result
                return
            yield backend, result
    finally:
        if chromium.exited() is None:
            chromium.closing = True  # Browser.close: Chromium ends by itself and completes its logs
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(browser.disconnect(), 2)


async def _locate(chromium, browser, server, page, backend, timeout):
    """KitError('failed at node X (Op): ...') from a fresh page in locate mode (each point
    executed alone, from the first), or None when it finds none."""
    import pyppeteer
    query = urlencode(dict(page, backend=backend, locate=1))
    try:
        await _capture_page(chromium, browser, f"{server.url}/inference_in_browser.html?{query}", backend, timeout)
    except KitError as error:
        return error if str(error).startswith("failed at ") else None
    except (pyppeteer.errors.PyppeteerError, ConnectionError, OSError):
        return None
    return None


async def _capture_page(chromium, browser, url, backend, timeout, model_ready=None):
    import pyppeteer
    deadline = time.monotonic() + timeout
    crashed = asyncio.get_running_loop().create_future()
    page = await _guarded(chromium, browser.newPage(), backend)
    console = []
    with Progress(f"browser/{backend}") as progress:
        def on_console(message):
            if not message.args:
                return  # the browser's own log (a failed resource load, an intervention), not the page's
            match = PROGRESS_LINE.match(message.text)
            if match:
                progress.update(int(match[1]), int(match[2]))
            else:
                console.append(one_line(message.text))
        page.on("console", on_console)
        page.on("pageerror", lambda error: console.append(f"page error: {one_line(str(error))}"))
        # the page's renderer died (pyppeteer says so as an "error" event, raised if none listens)
        page.on("error", lambda error: crashed.done() or crashed.set_result(str(error)))

        def remaining_ms():
            return max(1, int((deadline - time.monotonic()) * 1000))

        def said():
            return f"; its console said: {' | '.join(console[-5:])}" if console else "; its console said nothing"

        async def finished():
            nonlocal deadline
            await page.goto(url, timeout=remaining_ms())
            if model_ready is not None:  # started up: the page waits for the model (its query says wait)
                await page.waitForFunction("window.kitWaiting === true || window.kitResult !== undefined",
                                           timeout=remaining_ms())
                if await page.evaluate("window.kitResult === undefined"):
                    await model_ready()
                    deadline = time.monotonic() + timeout
                    await page.evaluate("window.kitGo()")
            await page.waitForFunction("window.kitResult !== undefined", timeout=remaining_ms())
            return await page.evaluate("window.kitResult")
        try:
            result = await _guarded(chromium, finished(), backend, crashed)
        except pyppeteer.errors.TimeoutError:
            raise KitError(f"backend {backend}: the page did not finish within {timeout:g} s (--timeout)"
                           + said()) from None
        except _PageCrashed:
            raise KitError(f"backend {backend}: the page crashed (its renderer process died){said()}") from None
        finally:
            if chromium.exited() is None:  # else nothing answers (pyppeteer would wait for ever)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.close(), 5)
    if not result.get("ok"):
        said = one_line(str(result.get("error")))  # the run's own 'failed at node X (Op): ...', else tfjs's words
        raise KitError(said if said.startswith("failed") else f"in the browser: {said}")


class _PageCrashed(Exception):
    pass


async def _guarded(chromium, awaitable, backend, crashed=None):
    """Await `awaitable`, unless Chromium ends first (KitError saying how) or `crashed` (a
    future: the page's renderer died) is set first (_PageCrashed). pyppeteer alone can miss a
    browser that died: a DevTools call of it may then wait for ever."""
    work = asyncio.ensure_future(awaitable)
    ended = asyncio.ensure_future(_ended(chromium))
    try:
        await asyncio.wait([work, ended] + ([crashed] if crashed is not None else []),
                           return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        if ended.done():
            raise KitError(f"backend {backend}: {chromium.exited(wait=1.0)}")
        raise _PageCrashed()
    finally:
        for future in (work, ended):
            if not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future


async def _ended(chromium, every=0.1):
    while chromium.exited() is None:
        await asyncio.sleep(every)


def _run_async(coroutine, chromium, caught):
    """Run `coroutine` to its end in a new event loop and return its result (_drive's rules)."""
    async def once():
        yield await coroutine
    (result,) = _drive(once(), chromium, caught)
    return result


def _drive(generator, chromium, caught):
    """Yield each item of the async `generator` as it comes, run in a new event loop (between
    items the caller has the thread: it saves what came). A SIGINT, SIGTERM or SIGHUP
    meanwhile stops Chromium at once, cancels the generator's work, is noted in `caught`
    (run() raises it again once all is cleaned up) and ends this with _Interrupted; one that
    comes while the caller has the thread is taken as soon as the loop runs again."""
    loop = asyncio.new_event_loop()
    # pyppeteer leaves tasks behind when the browser goes away under it; their errors are not news
    loop.set_exception_handler(lambda loop, context: None)
    running = []

    def on_signal(signum):
        if not caught:
            caught.append(signum)
            chromium.kill()
            for task in running:
                task.cancel()

    async def next_item():
        return await generator.__anext__()
    handled = []
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # nohup's SIGHUP stays ignored
                handled.append((signum, signal.getsignal(signum)))
                loop.add_signal_handler(signum, on_signal, signum)
    try:
        while True:
            task = loop.create_task(next_item())
            running[:] = [task]
            try:
                item = loop.run_until_complete(task)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not caught:
                    raise
                raise _Interrupted() from None
            finally:
                running.clear()
            if caught:
                raise _Interrupted()
            yield item
    finally:
        try:
            with contextlib.suppress(BaseException):  # its own clean-up (the DevTools connection), bounded there
                loop.run_until_complete(generator.aclose())
            _finish_tasks(loop)
        finally:
            # give the caller's handlers back; a signal in between waits (blocked) and reaches them
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signum for signum, _ in handled])
            try:
                for signum, handler in handled:
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, handler)
                loop.close()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if caught:
            raise _Interrupted()


class _Interrupted(BaseException):
    """A signal stopped the run; run() raises the signal again after cleaning up."""


def _finish_tasks(loop, wait=3.0):
    """Cancel what is left (pyppeteer's reader, callbacks) and let it end, for `wait` s at most."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait(pending, timeout=wait))
    with contextlib.suppress(BaseException):
        loop.run_until_complete(loop.shutdown_asyncgens())


def _raise_again(signum):
    """Deliver `signum` to this process again, now that the handlers are the caller's: Ctrl-C
    becomes KeyboardInterrupt, SIGTERM whatever the caller made of it (cli: Terminated)."""
    signal.raise_signal(signum)
    raise KitError(f"interrupted by {signal.Signals(signum).name}")  # a handler that did not raise


def _quiet_libraries():
    """pyppeteer and websockets log a dropped connection as an error; the kit reports what
    happened itself, in one line."""
    for name in ("pyppeteer", "websockets"):
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
            logger.addHandler(logging.NullHandler())


