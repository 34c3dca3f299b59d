"""python -m eps_resnet.study on tiny real training runs: plain and ε, two depths, two data sets."""
import json
import os

import pytest

from eps_resnet.plan import cifar_plan
from tests import datafiles
from tests.processes import assert_one_line_error, run_script, run_scripts

pytestmark = pytest.mark.slow  # trains through the real scripts (make test-fast skips it)

TINY = ("--max-epoch", "2", "--steps-per-epoch", "3", "--batch", "16")


def train(*runs):
    """Each (logdir, flags...) trained by train_cifar.py, two side by side; the log directories."""
    run_scripts(*[("train_cifar.py",) + tuple(args) + TINY + ("--logdir", logdir) for logdir, *args in runs], check=True)
    return [logdir for logdir, *_ in runs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Plain and ε runs on the digits at depths 8 and 14 (ε 1e6 closes every gate, ε 1e-6 none), and one plain
    CIFAR-10 run on pickles the test writes."""
    root = tmp_path_factory.mktemp("study")
    cifar = str(root / "cifar")
    datafiles.write_cifar10(cifar, per_batch=8, test=10)
    closed = ("-e", "1e6", "--epsilon-start", "0")
    runs = {"plain8": ("--demo", "--plain", "-n", "1"), "plain14": ("--demo", "--plain", "-n", "2"),
            "closed8": ("--demo", "-n", "1", *closed), "closed14": ("--demo", "-n", "2", *closed),
            "open8": ("--demo", "-n", "1", "-e", "1e-6", "--epsilon-start", "0"),
            "cifar8": ("--data", cifar, "--plain", "-n", "1", "--workers", "0")}
    return dict(zip(runs, train(*[(str(root / name),) + args for name, args in runs.items()])))


def last_val_error(logdir):
    """What a study row leads with: the reduced network's error for an ε-ResNet, the network's for a plain run."""
    last = [s for s in json.load(open(os.path.join(logdir, "stats.json"))) if "val_error" in s][-1]
    return last.get("val_error_reduced", last["val_error"])


def study(tmp_path, *logdirs):
    out = str(tmp_path / "study")
    proc = run_script("-m", "eps_resnet.study", *logdirs, "--out", out, check=True)
    rows = {os.path.basename(r["logdir"]): r for r in json.load(open(os.path.join(out, "study.json")))}
    return out, rows, proc


def test_rows_come_from_each_runs_files(runs, tmp_path):
    out, rows, proc = study(tmp_path, *runs.values())
    assert sorted(rows) == sorted(runs)
    for name, logdir in runs.items():
        assert rows[name]["val_error"] == pytest.approx(last_val_error(logdir))
        assert rows[name]["logdir"] == os.path.abspath(logdir) and rows[name]["finished"]
        gated = name.startswith(("closed", "open"))
        assert rows[name]["val_error_of"] == ("reduced network" if gated else "network")
        assert ("val_error_gated" in rows[name]) == gated
    assert (rows["plain8"]["depth"], rows["plain14"]["depth"]) == (8, 14)
    assert rows["plain8"]["epsilon"] is None and rows["closed8"]["epsilon"] == 1e6
    assert rows["cifar8"]["dataset"] == "cifar10" and rows["plain8"]["dataset"] == "digits"
    # every gate closed from the first step: all blocks discarded, the reduced network is the stem and the head
    for name, n in (("closed8", 1), ("closed14", 2)):
        r = rows[name]
        full = cifar_plan(n, image_size=16)
        assert r["discarded_ratio"] == 1.0 and r["discarded"] == sorted(full.block_names)
        assert r["discarded_ratio_per_group"] == {"1": 1.0, "2": 1.0, "3": 1.0}
        assert (r["layers_before"], r["layers_after"]) == (6 * n + 2, 2)
        assert r["params_before"] == full.num_params
        assert r["params_after"] == full.without(full.block_names).num_params < r["params_before"]
    for name in ("open8", "plain8", "plain14", "cifar8"):
        r = rows[name]
        assert r["discarded_ratio"] == 0.0 and r["layers_after"] == r["layers_before"]
        assert r["params_after"] == r["params_before"]
        assert set(r["discarded_ratio_per_group"].values()) == {0.0}
    files = sorted(os.listdir(out))
    assert files == ["fig6_depth.png", "fig7_memory.png", "fig8_epsilon.png", "study.json", "study.md"]
    for f in files:
        assert os.path.getsize(os.path.join(out, f)) > 1000, f
    md = open(os.path.join(out, "study.md")).read()
    closed14 = 100 * last_val_error(runs["closed14"])
    plain14 = 100 * last_val_error(runs["plain14"])
    assert ("digits, depth 14, ε 1e+06 (1 run): %.2f%% error, 100%% of blocks discarded, 14 -> 2 layers; plain %.2f%% "
            "(%+.2f points)" % (closed14, plain14, closed14 - plain14)) in md
    assert "cifar10, depth 8" not in md  # no ε-ResNet on CIFAR-10: nothing to compare
    assert "closed14" in proc.stdout


def test_plain_only_and_epsilon_only_sets(runs, tmp_path):
    out, rows, _ = study(tmp_path / "plain", runs["plain8"], runs["plain14"])
    assert [r["epsilon"] for r in rows.values()] == [None, None]
    assert "ε-ResNet against" not in open(os.path.join(out, "study.md")).read()
    out, rows, _ = study(tmp_path / "eps", runs["closed8"], runs["closed14"], runs["open8"])
    assert sorted(r["discarded_ratio"] for r in rows.values()) == [0.0, 1.0, 1.0]
    md = open(os.path.join(out, "study.md")).read()
    assert "ε 1e-06 (1 run)" in md and "; plain" not in md
    for name in ("fig6_depth.png", "fig7_memory.png", "fig8_epsilon.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000


def test_bad_study_requests(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_script("-m", "eps_resnet.study", str(empty), "--out", str(tmp_path / "o")),
                          "holds no training run")
    assert_one_line_error(run_script("-m", "eps_resnet.study", runs["plain8"], "--out", runs["closed8"]),
                          "is a training run's directory")
    assert not (tmp_path / "o").exists()
