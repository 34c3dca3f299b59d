"""Run the project's scripts in subprocesses, as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, timeout=900, check=False, env=None):
    cmd = [sys.executable, os.path.join(ROOT, script)] + [str(a) for a in args]
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:],
                                                          proc.stderr[-5000:]))
    return proc


def error_lines(proc):
    """The non-empty stderr lines of a failed run, without TensorFlow's start-up chatter."""
    return [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("WARNING: All log", "I0000", "E0000", "W0000"))]


def run_python(code, timeout=600):
    """Run a snippet of Python in a fresh interpreter with the project importable."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def assert_one_line_error(proc, *fragments, code=2):
    """The process failed with `code` and said why in exactly one 'error: ...' line containing `fragments`."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
