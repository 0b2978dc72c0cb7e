"""What every script shares at its top: one place that turns a KitError into one line."""
import argparse
import sys

from . import KitError

EXIT_KIT_ERROR = 2  # like argparse: the input or the setup is wrong, not the numbers


def run_main(main):
    """Call main(); print an expected failure as one 'error:' line and exit non-zero."""
    try:
        sys.exit(main())
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_KIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
