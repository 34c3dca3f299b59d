"""An input pipeline that fails loudly: a reader's error, or a dataflow worker that dies, ends the run with one
`error:` line within seconds, instead of a hang (the trainer waiting for a batch that never comes) or a silent
"finished" after 0 steps (tensorpack's enqueue thread ending quietly).

- `Guarded(ds, what)` wraps a dataflow: an exception while iterating it is the run's end. In the training
  process's main thread it is raised as a UserError; in another thread (the trainer's enqueue thread) the process
  ends at once (guard.abort); in a dataflow worker the line goes to the training process through a pipe and the
  worker exits, quietly.
- `watch_workers()` polls the dataflow workers; one that dies ends the run: with the worker's own line if it sent
  one, as an interrupt if a signal to stop killed it (SIGTERM to the process group), else naming how it died.
"""
import multiprocessing
import os
import signal
import threading

from tensorpack.dataflow import ProxyDataFlow

from .. import UserError, guard

POLL_SECONDS = 0.5
GRACE_SECONDS = 2.0  # a worker's death during a stop already under way is not a failure
WORKER_FAILED = 3    # exit code of a worker that reported its failure

_main_pid = os.getpid()
_reports = None  # multiprocessing.SimpleQueue made in the training process before its workers fork


def _report_queue():
    global _reports
    if _reports is None and os.getpid() == _main_pid:
        _reports = multiprocessing.SimpleQueue()
    return _reports


def _describe(error: BaseException) -> str:
    if isinstance(error, UserError):
        return str(error)
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return "%s%s" % (type(error).__name__, ": " + text if text else "")


class Guarded(ProxyDataFlow):
    """`ds`, whose failure ends the run (see the module's text); `what` names it ("training", "validation")."""

    def __init__(self, ds, what: str):
        super().__init__(ds)
        self.what = what
        _report_queue()

    def __iter__(self):
        try:
            for dp in self.ds:
                yield dp
        except Exception as e:
            _fail("the %s data failed: %s; fix or remove what it names, then start again (a training run: with "
                  "--resume)" % (self.what, _describe(e)))


def _fail(line: str):
    if os.getpid() != _main_pid:  # a dataflow worker: the training process speaks
        if _reports is not None:
            _reports.put(line)
        os._exit(WORKER_FAILED)
    if threading.current_thread() is threading.main_thread():
        raise UserError(line)
    guard.abort("error: " + line, 2)


def watch_workers():
    """Start watching this process's dataflow workers; returns a function that stops the watch."""
    stop = threading.Event()

    def children():
        known = getattr(multiprocessing.process, "_children", None)  # every child not yet joined, dead ones too
        return list(known) if known is not None else multiprocessing.active_children()

    def run():
        watched = set()
        while not stop.wait(POLL_SECONDS):
            watched.update(children())
            dead = [p for p in watched if p.exitcode is not None]
            if not dead:
                continue
            if stop.wait(GRACE_SECONDS) or guard.stopping():
                return  # the run is ending anyway
            _worker_died(dead[0])

    threading.Thread(target=run, name="dataflow-watchdog", daemon=True).start()
    return stop.set


def _worker_died(proc):
    code = proc.exitcode
    if _reports is not None and not _reports.empty():
        guard.abort("error: " + _reports.get(), 2)
    if code < 0 and -code in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        guard.abort(guard.interrupted_line(), 130)  # the whole process group was told to stop
    how = ("was killed by %s%s" % (signal.Signals(-code).name, " (out of memory?)" if -code == signal.SIGKILL else "")
           if code < 0 else "exited with code %d" % code)
    guard.abort("error: a dataflow worker (PID %d) %s, so training would wait for data forever; check the "
                "machine's memory and the data, then continue with --resume (or --workers 0 to read the data in "
                "the training process)" % (proc.pid, how), 2)
