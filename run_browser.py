"""Step 3 of 4: run the converted model in headless Chromium (tfjs WebGL backend), driven
by pyppeteer, and capture every layer.

    python run_browser.py [--out-dir results]

Serves the page and model on 127.0.0.1 at a free port, reads the capture straight from the
page, and writes OUT_DIR/keras_model_tfjs_browser.json. CHROME_PATH picks the browser.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import run_main
from tfjs_parity.runners import browser_runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    parser.add_argument("--chromium-arg", action="append", default=[], metavar="SWITCH",
                        help="extra Chromium switch, repeatable (e.g. --chromium-arg=--disable-webgl)")
    args = parser.parse_args()
    capture = browser_runner.run(args.out_dir / paths.CONVERTED_DIR / "model.json",
                                 chromium_args=args.chromium_arg)
    capture.save(args.out_dir / paths.BROWSER_CAPTURE)
    print(f"wrote {args.out_dir / paths.BROWSER_CAPTURE} ({capture.label}, {capture.metadata.get('renderer')})")


if __name__ == "__main__":
    run_main(main)
