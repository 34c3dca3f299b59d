"""How every entry point ends: one `error:` line and exit code 2 for a problem the user can fix, exit code 130
within a bounded time for Ctrl-C or SIGTERM, and never a traceback for either.

Light on purpose (no TensorFlow): demo.py and the figure commands use it too.

Stops. The first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread, which unwinds training or an
export cleanly (dataflow workers stopped, staging removed); later ones are ignored quietly. Python runs a signal
handler only when the main thread gets back to Python code, which a thread blocked inside TensorFlow (waiting for
input that never comes) may never do; so the C-level handler's wake-up byte is also read by a watcher thread,
which gives the process STOP_SECONDS to unwind and then ends it (`abort`). Forked children (dataflow workers) get
the default SIGTERM action and ignore SIGINT instead of inheriting these handlers.
"""
import os
import signal
import sys
import threading
from typing import Callable, List, Optional

from . import UserError
from .fileio import is_write_failure, write_failure_reason

STOP_SECONDS = 8.0  # from the first Ctrl-C/SIGTERM to the process's end, however busy the machine
INTERRUPTED = "interrupted; continue with --resume (from the last checkpoint, or afresh if the run stopped before " \
              "its first one)"

_state = {"interrupted": INTERRUPTED, "stopping": False, "installed": False}
_cleanups: List[Callable[[], None]] = []
_exit_lock = threading.Lock()


def main_guard(main, interrupted: str = INTERRUPTED):
    """Run `main()` and exit with its return value; a UserError (or a disk that refuses a write) becomes one line
    on stderr and exit code 2; an interrupt ends with `interrupted` on stderr and exit code 130."""
    _state["interrupted"] = interrupted
    install_stop_handlers()
    try:
        result = main()
    except KeyboardInterrupt:
        say(interrupted)
        exit_now(130)
    except Exception as e:
        code = _exit_code_for(e)
        if code is None:
            raise
        exit_now(code)
    exit_now(result or 0)


def _exit_code_for(e: Exception) -> Optional[int]:
    """Say what the user needs to know of `e`, raised by a command's main(), and return its exit code; None for a
    fault of ours, whose traceback is wanted."""
    if _state["stopping"] or _raised_by_an_interrupt(e):
        # the interrupt unwound through library code that failed on its way out (TensorFlow's device scope,
        # interrupted mid-graph-construction, raises IndexError): still the user's stop, not a fault
        say(_state["interrupted"])
        return 130
    if isinstance(e, UserError):
        if not e.quiet:
            say("error: %s" % e)
        return 2
    if isinstance(e, BrokenPipeError):  # the reader of our output went away (`| head`): nothing is left to say
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command that met a closed pipe
    if is_write_failure(e):
        where = getattr(e, "filename", None) or "a file"
        say("error: cannot write %s (%s); free disk space (or fix the permissions), then try again (a training run: "
            "with --resume)" % (where, write_failure_reason(e)))
        return 2
    return None


def _raised_by_an_interrupt(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _silence_stdout():
    """Point stdout at /dev/null, so that flushing what is buffered at exit does not raise the error again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def say(line: str):
    print(line, file=sys.stderr, flush=True)


def exit_now(code: int):
    """Exit with `code`. In a Horovod run, exit at once: horovodrun stops the other ranks when one exits, and a
    rank stopped that way (SIGTERM) must report the same code; atexit handlers would only delay us."""
    from .distributed import launched_by_horovodrun
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.stderr.flush()
    if launched_by_horovodrun():
        os._exit(code)
    sys.exit(code)


def run_stage(cmd, **popen_args) -> int:
    """Run `cmd` (a script of ours) as one stage of this command; its exit code. On Ctrl-C the terminal has told
    the stage too; on a SIGTERM to this process alone it is told here. Either way it gets the time to stop
    cleanly (its own interrupt line), then the KeyboardInterrupt goes on."""
    import subprocess
    proc = subprocess.Popen(cmd, **popen_args)
    unregister = on_abort(proc.kill)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # a stage ignores a second one quietly
        try:
            proc.wait(timeout=STOP_SECONDS - 1)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        unregister()


class BackgroundStage:
    """A stage running beside the foreground one (`start_stage`): leaving the `with` block stops it if it still
    runs (an interrupt or a failure of the other stage), giving it the time to stop cleanly first."""

    def __init__(self, proc):
        self.proc = proc
        self._unregister = on_abort(proc.kill)

    def wait(self) -> int:
        return self.proc.wait()

    def __enter__(self) -> "BackgroundStage":
        return self

    def __exit__(self, *exc):
        import subprocess
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # Ctrl-C has told it already; a second one is ignored quietly
                try:
                    self.proc.wait(timeout=STOP_SECONDS - 1)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self._unregister()
        return False


def start_stage(cmd, **popen_args) -> BackgroundStage:
    """Start `cmd` (a script of ours) as a background stage of this command."""
    import subprocess
    return BackgroundStage(subprocess.Popen(cmd, **popen_args))


def on_abort(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run `cleanup` (quickly, never raising) should the process be ended by `abort`; returns a function that
    unregisters it."""
    _cleanups.append(cleanup)
    return lambda: _cleanups.remove(cleanup) if cleanup in _cleanups else None


def abort(line: str, code: int):
    """End the process now from any thread: `line` on stderr, the registered clean-ups, child processes killed.
    For failures the main thread cannot be told about (it may be blocked inside TensorFlow). Only the first
    caller speaks."""
    if not _exit_lock.acquire(blocking=False):
        return
    try:
        say("\n" + line)  # a new line: a progress bar may hold the current one
        for cleanup in list(_cleanups):
            try:
                cleanup()
            except Exception:
                pass
        import multiprocessing
        for child in multiprocessing.active_children():
            child.kill()
        import logging
        logging.shutdown()
    finally:
        os._exit(code)


def interrupted_line() -> str:
    """What this command says when interrupted."""
    return _state["interrupted"]


def stopping() -> bool:
    """True once an interrupt arrived (a dataflow worker dying then is part of the stop, not a failure)."""
    return _state["stopping"]


def install_stop_handlers():
    """SIGINT and SIGTERM stop the process as described above; an inherited ignore (nohup) is kept."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _first_stop)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=_watch_wakeups, args=(read_end,), name="stop-watcher", daemon=True).start()
    os.register_at_fork(after_in_child=_child_defaults)


def _first_stop(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _start_deadline()
    raise KeyboardInterrupt()


def _start_deadline():
    if _state["stopping"]:
        return
    _state["stopping"] = True
    timer = threading.Timer(STOP_SECONDS, lambda: abort(_state["interrupted"], 130))
    timer.daemon = True
    timer.start()


def _watch_wakeups(read_end):
    wanted = {int(signal.SIGINT), int(signal.SIGTERM)}
    while True:
        try:
            data = os.read(read_end, 64)
        except OSError:
            return
        if not data:
            return
        if wanted & set(data):
            _start_deadline()


def _child_defaults():
    """In a forked child: our handlers and wake-up pipe are the parent's business."""
    _state["installed"] = False
    _state["stopping"] = False
    _cleanups.clear()
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    if signal.getsignal(signal.SIGTERM) is _first_stop:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is _first_stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
