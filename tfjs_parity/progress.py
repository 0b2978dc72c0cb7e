"""Progress of a long step on a terminal (one line, rewritten in place); nothing when the
output is piped or captured, so logs and tests see only the results."""
import re
import sys

# the line a runtime prints (Node on stderr, the page on its console) after each point captured
PROGRESS_LINE = re.compile(r"^progress (\d+)/(\d+)$")


class Progress:
    def __init__(self, label, stream=None):
        self.label, self.stream = label, stream or sys.stderr
        self.shown = self.stream.isatty()

    def update(self, done, total, unit="points"):
        if self.shown:
            self.stream.write(f"\r{self.label}: {done}/{total} {unit} captured\033[K")
            self.stream.flush()

    def close(self):
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
