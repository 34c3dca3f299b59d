import glob
import re
import json
import os

import pytest

from eps_resnet.plan import Plan, cifar_plan
from eps_resnet.rundir import discarded_in_record, read_records
from tests import datafiles
from tests.processes import assert_one_line_error, run_script

pytestmark = pytest.mark.slow  # trains or exports through the real scripts (make test-fast skips it)


def records_by_epoch(logdir):
    return {r["epoch"]: r for r in read_records(logdir)}


def test_demo_trains_discards_some_blocks_and_keeps_others(demo_run):
    logdir, proc = demo_run
    with open(os.path.join(logdir, "stats.json")) as f:
        stats = json.load(f)
    assert stats[-1]["val_error"] <= 0.5, stats[-1]  # the gated model, gates decided per batch (README)
    records = records_by_epoch(logdir)
    last = records[max(records)]
    discarded = discarded_in_record(last)
    assert 1 <= len(discarded) < len(last["blocks"]), discarded
    assert "discarded blocks: %d of 15" % len(discarded) in proc.stdout

    # the epoch in which the discarded count first rose by the threshold (0.5 in the demo recipe) resets the
    # learning rate to 0.1 for the epoch after it; the block reads as discarded then or one epoch later
    rise = min(e for e in records if e > 1 and records[e]["discarded_cnt"] >= records[e - 1]["discarded_cnt"] + 0.5)
    resets = [e for e, r in records.items() if r["lr_reset"]]
    assert resets and resets[0] == rise, (rise, resets)
    assert records[rise]["learning_rate"] == pytest.approx(0.1)
    assert records[rise - 1]["learning_rate"] == pytest.approx(0.1) or records[rise - 1]["learning_rate"] < 0.1
    first = min(e for e, r in records.items() if discarded_in_record(r))
    assert first in (rise, rise + 1), (first, rise)
    with open(os.path.join(logdir, "log.log")) as f:
        log = f.read()
    assert "adaptive learning rate: discarded blocks rose" in log
    assert "new" in log  # the discard table marks newly discarded blocks


def test_demo_run_files_are_present_and_consistent(demo_run):
    logdir, _ = demo_run
    plan = Plan.load(os.path.join(logdir, "plan.json"))
    assert plan == cifar_plan(5, num_classes=10, image_size=16)
    with open(os.path.join(logdir, "run.json")) as f:
        run = json.load(f)
    spe = run["steps_per_epoch"]
    records = records_by_epoch(logdir)
    assert sorted(records) == list(range(1, 31))
    for epoch, r in records.items():
        assert r["global_step"] == epoch * spe
        assert sorted(r["blocks"]) == sorted(plan.block_names)
        assert r["discarded_cnt"] == pytest.approx(sum(b["is_discarded"] for b in r["blocks"].values()))
        assert len(r["blocks"]["res1.0"]["kernels"]["percentiles"]) == 7
    assert os.path.isfile(os.path.join(logdir, "checkpoint"))
    assert glob.glob(os.path.join(logdir, "model-%d.index" % (30 * spe)))
    assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    with open(os.path.join(logdir, "stats.json")) as f:
        stats = json.load(f)
    assert [s["epoch_num"] for s in stats] == list(range(1, 31))
    for key in ("val_error", "val_error_reduced", "val_side_error", "discarded_cnt", "is_discarded/06_res2.1",
                "learning_rate"):
        assert key in stats[-1], key
    # the block map and the discard ratio reach TensorBoard as images at every epoch
    events = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    assert events.count(b"figures/block_map") >= 30 and b"figures/discard_ratio" in events


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    logdir = str(tmp_path / "nan")
    proc = run_script("tests/programs/diverging_run.py", logdir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.search(r"error: training loss became (nan|inf|-inf) at epoch 2", proc.stderr), proc.stderr[-2000:]
    assert os.path.isfile(os.path.join(logdir, "model-4.index"))
    assert not glob.glob(os.path.join(logdir, "model-8.*"))


def test_two_towers_share_one_epsilon_and_weight_decay(tmp_path):
    """The replicated multi-GPU trainer's graph, on this CPU (towers fall back to the CPU).

    ε is 0 in epoch 1 and huge from then on: a tower that read its own, never-updated copy of ε would keep
    its gates open in epoch 2. Both towers' gates must close together when the schedule changes. The weight
    decay steps down x0.2 every 3 steps, counted at each epoch's first step (schedule.WeightDecayPolicy)."""
    logdir = str(tmp_path / "towers")
    proc = run_script("tests/programs/two_towers.py", logdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(logdir, "log.log")) as f:
        log = f.read()
    assert "Training a model of 2 towers" in log
    assert "'InferenceTower0'" in log and "'InferenceTower1'" in log  # validation runs on every tower
    # the console leaves the per-block scalars out; stats.json keeps them
    assert "discarded_cnt: " in log and "is_discarded/0_res1.0: " not in log
    assert "batch_response_max/1_res2.0: " not in log and "response_mean/" not in log
    with open(os.path.join(logdir, "stats.json")) as f:
        last = json.load(f)[-1]
    assert "is_discarded/0_res1.0" in last
    assert 0.0 <= last["val_error_reduced"] <= 1.0  # the reduced network, validated on both towers too
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("TOWERS ", "SEEN ")))
    assert len(json.loads(out["TOWERS"])) == 2
    seen = json.loads(out["SEEN"])
    assert [row[1:3] for row in seen if row[0] == 1] == [[0.0, 0.0]] * 3
    assert [row[1:3] for row in seen if row[0] == 2] == [[1.0, 1.0]] * 3
    assert [row[3] for row in seen] == pytest.approx([4e-3] * 3 + [4e-3 * 0.2] * 3)
    with open(os.path.join(logdir, "stats.json")) as f:
        assert [s["weight_decay"] for s in json.load(f)] == pytest.approx([4e-3, 4e-3 * 0.2])
    import tensorflow as tf
    names = set(tf.train.load_checkpoint(os.path.join(logdir, "model-6")).get_variable_to_shape_map())
    assert "epsilon" in names and not [n for n in names if n.endswith("/epsilon") or "tower1/learning_rate" in n]
    # the training graph TensorBoard shows (the event file's): on this CPU both towers' gates branch on T with
    # Switch/Merge (gate.gated_sum), and nothing builds functional or loop control flow
    graph = tf.compat.v1.GraphDef()
    for event in tf.compat.v1.train.summary_iterator(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))[0]):
        if event.graph_def:
            graph.ParseFromString(event.graph_def)
            break
    in_blocks = [n for n in graph.node if re.search(r"(^|/)res\d\.\d+/", n.name)]
    assert in_blocks and not [n.name for n in in_blocks if n.op in ("If", "StatelessIf", "While", "Enter", "Exit")]
    for tower in ("tower0/", "tower1/"):
        assert any(n.op == "Merge" and n.name.startswith(tower + "res1.0/") for n in in_blocks), tower
    # each tower's channel regulariser reads that tower's own kernels (the replicated trainer keeps a copy per tower)
    reads = {n.name: [i.lstrip("^") for i in n.input] for n in graph.node}
    tower1_kernels = {i for name, inputs in reads.items() if name.startswith("tower1/channels/")
                      for i in inputs if "/W" in i and not i.startswith("tower1/channels/")}
    assert tower1_kernels and all(i.startswith("tower1/") for i in tower1_kernels), sorted(tower1_kernels)[:5]
    # records show ε after the epoch's setters ran: switched on at the end of epoch 1
    assert [r["epsilon"] for r in read_records(logdir)] == [1e6, 1e6]


def test_xla_flag_compiles_the_training_graph_on_this_cpu(tmp_path):
    logdir = str(tmp_path / "xla")
    proc = run_script("train_cifar.py", "--demo", "-n", "1", "--max-epoch", "1", "--steps-per-epoch", "3", "--xla",
                      "--logdir", logdir, env={"TF_CPP_MIN_LOG_LEVEL": "0"}, check=True)
    assert "Compiled cluster using XLA" in proc.stderr  # TensorFlow's own line: clusters were compiled and run
    assert os.path.isfile(os.path.join(logdir, "model-3.index"))


def test_svhn_with_the_released_data_pipeline(tmp_path):
    """--jitter released --mean-from all trains on real .mat files; a resume cannot switch the mean image."""
    import numpy as np
    import tensorflow as tf
    from tests import datafiles
    data = str(tmp_path / "svhn")
    os.makedirs(data)
    mats = datafiles.write_svhn(data, sizes=(("train", 20), ("test", 7), ("extra", 12)))
    logdir = str(tmp_path / "run")
    args = ["--data", data, "-n", "1", "--batch", "8", "--steps-per-epoch", "2", "--workers", "1", "--logdir", logdir]
    run_script("train_svhn.py", *args, "--jitter", "released", "--mean-from", "all", "--max-epoch", "1", check=True)
    every = np.concatenate([X for X, _ in mats.values()], axis=3).transpose(3, 0, 1, 2).astype(np.float64)
    mean = tf.train.load_checkpoint(os.path.join(logdir, "model-2")).get_tensor("mean_image")
    np.testing.assert_allclose(mean, every.mean(axis=0), atol=1e-3)
    with open(os.path.join(logdir, "run.json")) as f:
        recipe = json.load(f)["recipe"]
    assert (recipe["svhn_jitter"], recipe["mean_from"]) == ("released", "all")
    assert_one_line_error(run_script("train_svhn.py", *args, "--jitter", "released", "--max-epoch", "2", "--resume"),
                          "--mean-from")


# ---- command line ------------------------------------------------------------------------------
def test_dry_runs_print_the_plan():
    out = run_script("train_imagenet.py", "--dry-run", "-d", "152", check=True).stdout
    assert "60.19 M parameters" in out
    out = run_script("train_cifar.py", "--dry-run", "-n", "125", check=True).stdout
    assert "375 gated blocks" in out and out.startswith("ResNet-752 (cifar style), 752 weight layers")
    out = run_script("train_cifar.py", "--dry-run", "-n", "4", "--width", "10", check=True).stdout
    assert out.startswith("WRN-28-10") and "12 gated blocks, 36.48 M parameters" in out
    out = run_script("train_svhn.py", "--dry-run", "-n", "111", "--bottleneck", check=True).stdout
    assert out.startswith("ResNet-1001 (cifar style), 1001 weight layers, 333 gated blocks, 10.33 M parameters")
    out = run_script("train_imagenet.py", "--dry-run", "-d", "200", check=True).stdout
    assert out.startswith("ResNet-200 (imagenet style), 200 weight layers, 66 gated blocks, 64.67 M parameters")
    assert_one_line_error(run_script("train_cifar.py", "--dry-run", "--width", "0"), "--width must be >= 1")


@pytest.mark.parametrize("script", ["train_cifar.py", "train_svhn.py", "train_imagenet.py"])
def test_help_lists_every_flag_with_its_default(script):
    out = run_script(script, "--help", check=True).stdout
    body = out.split("options:", 1)[1]
    flags = [l.split()[0] for l in body.splitlines() if l.strip().startswith("-") and not l.strip().startswith("-h")]
    entries = body.split("\n  -")[2:]  # one entry per option after --help
    assert len(entries) == len(flags) >= 14
    for entry in entries:
        assert "(default:" in " ".join(entry.split()), entry


def test_bad_command_lines(tmp_path):
    assert_one_line_error(run_script("train_cifar.py", "--data", str(tmp_path / "missing"), "--logdir",
                                     str(tmp_path / "never")), "does not exist", "--data")
    assert not (tmp_path / "never").exists()  # a failed start leaves no log directory behind
    assert_one_line_error(run_script("train_cifar.py"), "--data DIR")
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--gpu", "zero"), "--gpu")
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--gpu", "0"), "0 are visible", "drop --gpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--resume", "--logdir", str(empty)),
                          "nothing to resume")
    assert_one_line_error(run_script("train_cifar.py", "--demo", "-e", "-1"), "--epsilon must be >= 0")
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--channel-penalty", "nan"), "--channel-penalty")
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--channel-variance", "2"), "--channel-penalty LAMBDA")
    assert_one_line_error(run_script("train_imagenet.py", "--fake", "--batch", "256", "--gpu", "0,1,2"), "GPU")


def test_existing_run_is_refused_and_untouched(demo_run, tmp_path):
    logdir, _ = demo_run
    before = {f: os.path.getmtime(os.path.join(logdir, f)) for f in os.listdir(logdir)}
    assert_one_line_error(run_script("train_cifar.py", "--demo", "--logdir", logdir), "already holds a run",
                          "--resume")
    # a checkpoint of another depth: the first variable the checkpoint lacks is named
    assert_one_line_error(run_script("train_cifar.py", "--demo", "-n", "6", "--load", logdir,
                                     "--logdir", str(tmp_path / "new")),
                          "does not match this network", "res1.5/")
    assert {f: os.path.getmtime(os.path.join(logdir, f)) for f in os.listdir(logdir)} == before


def test_imagenet_resnet200_trains_two_steps_on_a_jpeg_tree(tmp_path):
    """The pre-activation paper's 200-layer network end to end on a tiny JPEG tree (32x32 inputs)."""
    data = str(tmp_path / "imagenet")
    datafiles.write_imagenet(data, per_class=2)
    logdir = str(tmp_path / "run")
    proc = run_script("train_imagenet.py", "--data", data, "-d", "200", "--image-size", "32", "--batch", "2",
                      "--max-epoch", "1", "--steps-per-epoch", "2", "--workers", "0", "--logdir", logdir, check=True)
    assert "discarded blocks: " in proc.stdout and " of 66" in proc.stdout
    plan = Plan.load(os.path.join(logdir, "plan.json"))
    assert plan.title == "ResNet-200" and plan.num_classes == 3
    assert os.path.exists(os.path.join(logdir, "model-2.index"))
