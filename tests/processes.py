"""Run the project's scripts in subprocesses, as a user would."""
import os
import subprocess
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, timeout=900, check=False, env=None):
    """`script` (a path under the repository, or "-m" followed by a module in `args`) with `args`."""
    cmd = [sys.executable] + ([script] if script == "-m" else [os.path.join(ROOT, script)]) + [str(a) for a in args]
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:],
                                                          proc.stderr[-5000:]))
    return proc


def run_scripts(*commands, side_by_side=2, timeout=900, check=False):
    """Each command (a tuple: script, then its args) as run_script would run it, `side_by_side` at a time: most of
    a short run is TensorFlow's start-up on one core, so two share a 2-core machine well. Results in order."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(side_by_side) as pool:
        futures = [pool.submit(run_script, *command, timeout=timeout, check=check) for command in commands]
        return [f.result() for f in futures]


def error_lines(proc):
    """The non-empty stderr lines of a failed run, without TensorFlow's start-up chatter."""
    return [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("WARNING: All log", "I0000", "E0000", "W0000"))]


def assert_one_line_error(proc, *fragments, code=2):
    """The process failed with `code` and said why in exactly one 'error: ...' line containing `fragments`."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class Background:
    """A script running in the background, its output going to files (a pipe nobody reads would stall it)."""

    def __init__(self, cmd, env):
        import tempfile
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        # Ctrl-C reaches it as in a terminal, even when the tests run as a background job (which ignores SIGINT,
        # and Python keeps an ignored SIGINT ignored)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._out, stderr=self._err, text=True, env=env,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.pid = self.proc.pid

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=None):
        return self.proc.wait(timeout=timeout)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        self.proc.kill()

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def stdout(self):
        self._out.seek(0)
        return self._out.read()

    @property
    def stderr(self):
        self._err.seek(0)
        return self._err.read()


def start_script(script, *args, env=None):
    """Start a script in the background, as a user would in another terminal."""
    cmd = [sys.executable, os.path.join(ROOT, script)] + [str(a) for a in args]
    return Background(cmd, dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def wait_until(condition, timeout=300, proc=None, what="the condition"):
    """Poll `condition()` until it is true; fails if `proc` ends first or the time runs out."""
    import time
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the process ended (%s) before %s:\n%s" % (proc.returncode, what, proc.stderr[-3000:]))
        if time.time() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


def descendants(pid):
    """PIDs of every living process below `pid` (children, their children, ...), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False
