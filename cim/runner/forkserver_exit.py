"""Imported by the fork server of local worker processes only (:data:`cim.runner.cluster.PRELOAD`): the server
ends without Python's interpreter teardown.

The server exits when the driver does (its pipe from the driver closes). Tearing down what it imported
(distributed, numpy, the stages' libraries) took ~0.15 s, while it still held the driver's standard streams: a
caller reading the driver's output to its end (a pipe, ``subprocess.run(capture_output=True)``, a CI log) waited
that long after the job had ended. The server holds no files and buffers no output, so it ends at once. Its
workers do not run this: a child the server forks leaves through ``os._exit`` after its own cleanup.
"""

from __future__ import annotations

import atexit
import os
import sys


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


atexit.register(_end_now)
