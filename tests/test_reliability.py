"""The second fault pass, by pattern: a reader that fails or a worker that dies, commands that write files,
resume with missing records, --load from a run still training, and stops (export folder promises: test_export).

Every case runs the real scripts on real files the test writes, and checks what the user sees (one `error:`
line, the exit code, no traceback) and what is left on disk.
"""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from eps_resnet.rundir import checkpoint_steps
from tests.processes import ROOT, alive, assert_one_line_error, descendants, run_script, start_script, wait_until
from tests.conftest import TINY
from tests.test_faults import copy_run, fill, listing, small_disk

pytestmark = pytest.mark.slow


def error_line(proc):
    """The single `error:` line of a failed training run (its other stderr lines are progress bars and logs)."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
    lines = [l.strip() for l in proc.stderr.splitlines() if l.strip().startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def modes(folder):
    found = {stat.S_IMODE(os.stat(folder).st_mode)}
    for d, dirs, files in os.walk(folder):
        found |= {stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for n in dirs + files}
    return found


# ---- 1. a reader that fails, a worker that dies ----------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_a_reader_that_fails_ends_the_run_with_one_line(tmp_path, workers):
    """It hung with --workers 2 (the worker died, the trainer waited) and 'finished' after 0 steps with 0."""
    cmd = [sys.executable, os.path.join(ROOT, "tests", "programs", "failing_reader.py"), str(tmp_path / "run"),
           str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc)
    assert "the train data failed: OSError: [Errno 5] Input/output error: 'shard-0007.bin'" in line
    assert "run finished" not in proc.stdout


def test_a_dataflow_worker_that_dies_ends_the_run_within_seconds(tmp_path):
    logdir = str(tmp_path / "run")
    proc = start_script("train_cifar.py", *TINY, "--max-epoch", "1000", "--workers", "2", "--logdir", logdir)
    try:
        wait_until(lambda: os.path.exists(os.path.join(logdir, "model-3.index")), proc=proc, what="a checkpoint")
        worker = descendants(proc.pid)[0]
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    line = error_line(proc)
    assert "a dataflow worker (PID %d) was killed by SIGKILL" % worker in line and "--resume" in line


# ---- 4. every command that writes files ---------------------------------------------------------------------
def test_figures_frontier_and_study_refuse_or_clean_up_like_the_export(tiny_run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    other = copy_run(tiny_run, tmp_path, "other")
    before = listing(other)
    for command in (["-m", "eps_resnet.figures", tiny_run], ["-m", "eps_resnet.frontier", tiny_run],
                    ["-m", "eps_resnet.study", tiny_run]):
        assert_one_line_error(run_script(*command, "--out", str(a_file)), "is a file; pass a directory")
        assert_one_line_error(run_script(*command, "--out", os.path.join(other, "notes")), "inside the training run")
    assert listing(other) == before
    assert a_file.read_text() == "mine"
    disk = str(tmp_path / "disk")
    with small_disk(disk, "64k"):
        fill(disk)  # full: the figures cannot be written, and nothing of them may stay
        os.remove(os.path.join(disk, "filler"))
        with open(os.path.join(disk, "filler"), "wb") as f:
            f.write(b"\0" * 40000)
        for command in (["-m", "eps_resnet.figures", tiny_run], ["-m", "eps_resnet.study", tiny_run]):
            assert_one_line_error(run_script(*command, "--out", os.path.join(disk, "new", "deeper")),
                                  "No space left on device", "nothing was written")
        assert os.listdir(disk) == ["filler"]
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
        assert_one_line_error(run_script("-m", "eps_resnet.figures", tiny_run, "--out", os.path.join(disk, "x")),
                              "Read-only file system")
    # what they publish is readable by others whatever the umask
    out = str(tmp_path / "figs" / "of" / "run")
    proc = subprocess.run("umask 077 && exec %s -m eps_resnet.figures %s --out %s" % (sys.executable, tiny_run, out),
                          shell=True, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert modes(out) == {0o755, 0o644} and modes(str(tmp_path / "figs")) == {0o755, 0o644}
    assert not [n for n in os.listdir(str(tmp_path / "figs" / "of")) if n.startswith(".")]


# ---- resume trusts nothing missing; --load reads a snapshot -------------------------------------------------------
def test_resume_refuses_a_run_whose_records_or_checkpoints_are_missing(tiny_run, tmp_path):
    logdir = copy_run(tiny_run, tmp_path)
    os.remove(os.path.join(logdir, "discards.jsonl"))
    before = listing(logdir)
    proc = run_script("train_cifar.py", *TINY, "--max-epoch", "3", "--logdir", logdir, "--resume")
    assert_one_line_error(proc, "has no record of epoch(s) 1, 2 in discards.jsonl", "--load")
    assert listing(logdir) == before
    # records of two epochs without any checkpoint: not a start that never finished its first epoch
    logdir = copy_run(tiny_run, tmp_path, "no-checkpoints")
    for name in os.listdir(logdir):
        if name.startswith("model-"):
            os.remove(os.path.join(logdir, name))
    before = listing(logdir)
    proc = run_script("train_cifar.py", *TINY, "--max-epoch", "3", "--logdir", logdir, "--resume")
    assert_one_line_error(proc, "holds the records of 2 epochs but none of their checkpoints")
    assert listing(logdir) == before


def test_load_reads_a_snapshot_of_a_checkpoint_that_may_rotate_away(tiny_run, tmp_path):
    source = copy_run(tiny_run, tmp_path, "source")
    logdir = str(tmp_path / "new")
    proc = start_script("train_cifar.py", *TINY, "--max-epoch", "1", "--load", source, "--logdir", logdir)
    try:
        snapshot = os.path.join(logdir, ".loading", "model-6.index")
        wait_until(lambda: os.path.exists(snapshot), proc=proc, what="the snapshot of the loaded checkpoint")
        for name in os.listdir(source):  # the source run's checkpoints rotate away before the weights are read
            if name.startswith("model-"):
                os.remove(os.path.join(source, name))
        assert proc.wait(timeout=300) == 0, proc.stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert checkpoint_steps(logdir) == [3] and not os.path.exists(os.path.join(logdir, ".loading"))


# ---- 6. stops ----------------------------------------------------------------------------------------------------
def test_sigterm_stops_a_run_with_workers_within_ten_seconds_on_a_loaded_machine(tmp_path):
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"])
               for _ in range(2)]
    logdir = str(tmp_path / "run")
    proc = start_script("train_cifar.py", *TINY, "--max-epoch", "1000", "--workers", "2", "--logdir", logdir)
    try:
        wait_until(lambda: len(checkpoint_steps(logdir)) >= 1, proc=proc, what="a checkpoint")
        workers = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # a second one is ignored quietly
        started = time.time()
        code = proc.wait(timeout=30)
        took = time.time() - started
    finally:
        for p in burners:
            p.kill()
        if proc.poll() is None:
            proc.kill()
    assert code == 130 and took < 10, (code, took)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert "continue with --resume" in proc.stderr
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)]


def test_ctrl_c_during_the_demo_ends_it_without_a_traceback(tmp_path):
    """Ctrl-C reaches every process of the terminal's foreground group, twice for an impatient user."""
    out = str(tmp_path / "demo")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "demo.py"), "--out", out], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        log = os.path.join(out, "plain", "log.log")
        wait_until(lambda: os.path.exists(log) and "Start Epoch 1" in open(log).read(), timeout=300,
                   what="the plain run's first epoch")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "Traceback" not in stdout + stderr and "Exception ignored" not in stdout + stderr
    assert stderr.rstrip().splitlines()[-1].startswith("interrupted; the demo's runs so far")
    try:
        os.killpg(proc.pid, 0)
        group_alive = True
    except ProcessLookupError:
        group_alive = False
    assert not group_alive


@pytest.mark.parametrize("how", ["chained", "later"])
def test_ctrl_c_that_breaks_library_code_on_its_way_out_is_still_an_interrupt(how):
    """A traceback printed for the user's own Ctrl-C looks like a crash of ours (seen once in CI: the demo's
    second stage was building its graph)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "programs", "interrupted_library.py"), how],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["interrupted; continue with --resume (from the last checkpoint, or "
                                                "afresh if the run stopped before its first one)"]
