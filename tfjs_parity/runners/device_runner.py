"""Any device, any browser: serve the page, tfjs and the converted model on the address asked
for (loopback unless told otherwise), every path under a fresh random token (session.py);
the device's browser runs each backend asked for and uploads each capture, yielded as it
arrives, as an ordinary capture named after the device and backend
(keras_model_tfjs_device_<backend>_<device>)."""
import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from .. import KitError
from .session import DEVICE_RUNTIME, MAX_DEVICES, DeviceSession, page_parameters, summary
from ..wire import BROWSER_BACKENDS

NAME = DEVICE_RUNTIME
SCRIPT = "run_browser.py --device"
BACKENDS = BROWSER_BACKENDS  # the page's, on any browser
IDLE_TIMEOUT = 600.0  # seconds without a request before a device run ends by itself (--idle-timeout)


CHOSEN_BY = "--device"
FLAGS = ("listen", "devices", "idle_timeout")  # the flags only this runner reads


@dataclass
class Options:
    listen: Optional[tuple] = None        # (address, port) to serve on; loopback, a free port by default
    devices: Optional[int] = None         # end once this many devices reported on every backend
    idle_timeout: Optional[float] = None  # end after this long without a request (IDLE_TIMEOUT)


def add_arguments(parser):
    from ..cli import positive_int
    from ..steps import positive_float
    device = parser.add_argument_group("a real device (a phone, any browser)")
    device.add_argument("--device", action="store_true",
                        help="serve the page for devices to open, and save what they upload")
    device.add_argument("--listen", type=parse_listen, metavar="ADDRESS[:PORT]",
                        help="where to serve with --device (default 127.0.0.1, a free port): never more than this")
    device.add_argument("--devices", type=positive_int, metavar="N",
                        help="end once N devices have reported on every backend (default: on Ctrl-C)")
    device.add_argument("--idle-timeout", type=positive_float, metavar="SECONDS",
                        help=f"end after this long without a request (default {IDLE_TIMEOUT:g})")


def options(args):
    return Options(args.listen, args.devices, args.idle_timeout)


def parse_listen(text):
    """argparse type for --listen ADDRESS[:PORT] ([v6]:PORT for IPv6): (address, port)."""
    import argparse
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an IP address, optionally with :PORT "
                                         "(e.g. 127.0.0.2, 192.168.1.20:8800, [::1]:8800)")
    host, port = (match[1], match[2]) if match[1] else (match[3], match[4])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {host} is not an IP address") from None
    mapped = getattr(address, "ipv4_mapped", None) or address  # ::ffff:0.0.0.0 is 0.0.0.0
    if mapped.is_multicast or mapped == ipaddress.ip_address("255.255.255.255"):
        raise argparse.ArgumentTypeError(f"{text!r}: not an address of one machine")
    if mapped.is_unspecified:  # every address: more than a device needs, and no URL to print
        raise argparse.ArgumentTypeError(f"{text!r}: give the one address the device will use (this machine's "
                                         "address on its network), not every address")
    port = int(port or 0)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port} is beyond 65535")
    return host, port


def print_qr(url):
    """The URL as a QR code on the terminal, for a phone's camera (segno: a well-kept QR library)."""
    import segno
    segno.make(url, error="l").terminal(compact=True)


def run(job, say=print):
    """Wait for devices on job.options.listen and yield each capture they upload as it arrives
    (a backend a device lacks is said, not yielded); end after job.options.devices devices,
    the idle timeout, or Ctrl-C. KitError when no device uploaded a capture."""
    devices = job.option("devices", None)
    idle_timeout = job.option("idle_timeout", None) or IDLE_TIMEOUT
    session = DeviceSession(job.model_json, job.out_dir, job.backends, page_parameters(job),
                            job.option("listen", None) or ("127.0.0.1", 0), max_devices=devices or MAX_DEVICES)
    received = 0
    with session:
        say(f"serving on {session.server.netloc} only: {session.served()}")
        say(f"open this on the device (it runs {', '.join(job.backends)} and uploads each capture here):")
        say(f"  {session.url}")
        print_qr(session.url)
        say("waiting for devices: " + (f"ends after {devices}" if devices else "Ctrl-C ends")
            + f", or after {idle_timeout:g} s without a request")
        outcomes = yield from _captures(session.arrivals(NAME, job.flags, devices=devices, idle_timeout=idle_timeout,
                                                         say=say))
        received = sum(outcome == "arrived" for done in outcomes.values() for outcome in done.values())
    if not received:
        raise KitError("no device uploaded a capture")
    say(f"done: {summary(outcomes)}")


def _captures(arrivals):
    """Each capture of `arrivals` as (backend, Capture); its return value, arrivals'."""
    while True:
        try:
            _, backend, result = next(arrivals)
        except StopIteration as stop:
            return stop.value
        if not isinstance(result, KitError):
            yield backend, result
