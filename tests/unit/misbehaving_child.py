"""A child that breaks docpipe.children's protocol when asked to: the faults tests inject."""

from __future__ import annotations

import json
import os
import sys
import time


def say(data: bytes) -> None:
    os.write(1, data)


def main() -> None:
    for line in sys.stdin.buffer:
        how = json.loads(line)["do"]
        if how == "twice":  # a second answer after the first: out of turn
            say(b'{"ok": 1}\n{"ok": 2}\n')
        elif how == "trickle":  # a line that never ends, a byte at a time
            for _ in range(100):
                say(b" ")
                time.sleep(0.2)
        elif how == "flood":  # a line with no end in sight
            say(b"x" * (3 * 1024 * 1024))
        elif how == "later":  # answers, then speaks again unasked
            say(b'{"ok": 1}\n')
            time.sleep(0.3)
            say(b'{"stale": 1}\n')
        elif how == "list":
            say(b"[1, 2]\n")
        elif how == "env":
            say(json.dumps({"env": sorted(os.environ)}).encode() + b"\n")
        else:
            say(json.dumps({"ok": how}).encode() + b"\n")


if __name__ == "__main__":
    main()
