"""Training in two Horovod processes on loopback (horovodrun --gloo -np 2 -H localhost:2).

`make test` installs Horovod (tools/install_horovod.sh) before it runs these.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.processes import ROOT, run_script

pytestmark = pytest.mark.slow  # trains or exports through the real scripts (make test-fast skips it)

HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
RANK_LINE = re.compile(r"^\[(\d)\]<stdout>:.*rank (\d) of 2, epoch (\d+): learning_rate (\S+) epsilon (\S+) "
                       r"discarded_cnt (\S+) \(this rank alone (\S+)\) lr_reset (True|False)")


def horovodrun(*args, cwd, timeout=600):
    cmd = [HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable] + [str(a) for a in args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc


def rank_lines(proc):
    """{rank: {epoch: (lr, ε, agreed discarded_cnt, this rank's own count, lr_reset)}} from the per-rank logs."""
    found = {0: {}, 1: {}}
    for line in proc.stdout.splitlines():
        m = RANK_LINE.match(line)
        if m:
            prefix, rank, epoch = int(m.group(1)), int(m.group(2)), int(m.group(3))
            assert prefix == rank
            found[rank][epoch] = (float(m.group(4)), float(m.group(5)), float(m.group(6)), float(m.group(7)),
                                  m.group(8) == "True")
    return found


def discards(workdir):
    with open(os.path.join(workdir, "rank0", "train_log", "run", "discards.jsonl")) as f:
        return {r["epoch"]: r for r in map(json.loads, f)}


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("horovod"))
    proc = horovodrun(os.path.join(ROOT, "tests", "programs", "horovod_job.py"), "--workdir", workdir, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc


def test_ranks_agree_on_every_gate_driven_decision(two_rank_run):
    workdir, proc = two_rank_run
    lines = rank_lines(proc)
    assert sorted(lines[0]) == sorted(lines[1]) == [1, 2, 3, 4]
    for epoch in range(1, 5):
        lr0, eps0, cnt0, _, reset0 = lines[0][epoch]
        lr1, eps1, cnt1, _, reset1 = lines[1][epoch]
        assert (lr0, eps0, cnt0, reset0) == (lr1, eps1, cnt1, reset1), epoch
    # epoch 2: rank 0's data closed its gates, rank 1's did not; alone, only rank 0 would have reset the LR
    own0, own1 = lines[0][2][3], lines[1][2][3]
    assert own0 >= 1.0 and own1 < 1.0, (own0, own1)
    assert lines[0][2][2] == pytest.approx((own0 + own1) / 2, rel=1e-5)
    assert [lines[1][e][4] for e in range(1, 5)] == [False, True, False, False]
    assert [lines[1][e][0] for e in range(1, 5)] == pytest.approx([0.0, 0.1, 0.01, 0.01])
    # discards.jsonl holds the trajectory both ranks used
    records = discards(workdir)
    for epoch in range(1, 5):
        lr, eps, cnt, _, reset = lines[1][epoch]
        r = records[epoch]
        assert (r["learning_rate"], r["epsilon"], r["lr_reset"]) == (lr, eps, reset)
        assert r["discarded_cnt"] == pytest.approx(cnt, rel=1e-6)


def test_weights_stay_equal_and_only_rank_0_writes(two_rank_run):
    workdir, _ = two_rank_run
    w0 = np.load(os.path.join(workdir, "weights", "rank0.npz"))
    w1 = np.load(os.path.join(workdir, "weights", "rank1.npz"))
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 20
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
    assert files_under(os.path.join(workdir, "rank1")) == []
    written = files_under(os.path.join(workdir, "rank0"))
    for name in ("plan.json", "run.json", "discards.jsonl", "model-80.index", "stats.json", "log.log"):
        assert os.path.join("train_log", "run", name) in written
    assert any("events.out.tfevents" in f for f in written)


def test_resume_under_horovod_continues_the_agreed_schedule(two_rank_run):
    workdir, _ = two_rank_run
    proc = horovodrun(os.path.join(ROOT, "tests", "programs", "horovod_job.py"), "--workdir", workdir, "--resume",
                      "--max-epoch", "5", cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = rank_lines(proc)
    assert sorted(lines[0]) == sorted(lines[1]) == [5]
    # the fast schedule started at the reset of epoch 2 sets 0.001 at the end of epoch 5 on both ranks; rank 1
    # keeps no discards.jsonl of its own, so it knows of the reset only from rank 0
    assert lines[0][5][0] == lines[1][5][0] == pytest.approx(0.001)
    record = discards(workdir)[5]
    assert record["global_step"] == 100 and record["learning_rate"] == pytest.approx(0.001)
    assert files_under(os.path.join(workdir, "rank1")) == []
    w0 = np.load(os.path.join(workdir, "weights", "rank0.npz"))
    w1 = np.load(os.path.join(workdir, "weights", "rank1.npz"))
    assert all(np.array_equal(w0[n], w1[n]) for n in w0.files)


def start_errors(proc):
    """(error lines of rank 0, error lines of rank 1, exit codes horovodrun reports per process)."""
    errors = {0: [], 1: []}
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        m = re.match(r"^\[(\d)\]<stderr>:(error: .*)", line)
        if m:
            errors[int(m.group(1))].append(m.group(2))
    codes = {int(r): int(c) for r, c in re.findall(r"Process (\d) exit with status code (-?\d+)\.",
                                                    proc.stdout + proc.stderr)}
    return errors[0], errors[1], codes


def test_unwritable_log_directory_stops_every_rank(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = horovodrun(os.path.join(ROOT, "train_cifar.py"), "--demo", "--logdir", blocker / "run", cwd=str(tmp_path))
    assert proc.returncode != 0
    on_rank0, on_rank1, codes = start_errors(proc)
    assert len(on_rank0) == 1 and "cannot write the log directory" in on_rank0[0], proc.stdout[-3000:]
    assert on_rank1 == []
    assert codes == {0: 2, 1: 2}, proc.stdout[-3000:]
    assert blocker.read_text() == "not a directory"


def test_batch_that_does_not_divide_over_the_ranks(tmp_path):
    logdir = tmp_path / "run"
    proc = horovodrun(os.path.join(ROOT, "train_imagenet.py"), "--fake", "-d", "18", "--batch", "3",
                      "--logdir", logdir, cwd=str(tmp_path))
    on_rank0, on_rank1, codes = start_errors(proc)
    assert len(on_rank0) == 1 and "--batch 3 (total) does not divide over 2 Horovod processes" in on_rank0[0]
    assert on_rank1 == []
    assert codes == {0: 2, 1: 2}, proc.stdout[-3000:]
    assert not logdir.exists()


def test_trainer_horovod_without_horovod_installed(tmp_path):
    proc = run_script("tests/programs/without_horovod.py", "--demo", "--trainer", "horovod", "--logdir",
                      str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "needs Horovod" in errors[0] and "make horovod" in errors[0]
    assert not (tmp_path / "run").exists()
