"""A command whose Ctrl-C arrives inside library code that fails on its way out, as TensorFlow's device scope
does when interrupted mid-graph-construction (its stack left empty, its exit raises IndexError).

    python tests/programs/interrupted_library.py chained|later

chained: the library's error has the KeyboardInterrupt as its context;
later: the library swallows the interrupt and fails afterwards, outside the handler.
"""
import contextlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from eps_resnet import guard  # noqa: E402

stack = ["/cpu:0"]


@contextlib.contextmanager
def device_scope():
    stack.clear()  # the interrupt lands before the library restores its stack
    try:
        yield
    finally:
        stack[-1]


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)


def main():
    if sys.argv[1] == "chained":
        with device_scope():
            ctrl_c()
    else:
        try:
            ctrl_c()
        except KeyboardInterrupt:
            pass
        raise RuntimeError("session closed")


guard.main_guard(main)
