import json
import os
import shlex
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from eps_resnet.inference import build_inference_graph, check_checkpoint_matches
from eps_resnet.plan import Plan, cifar_plan, imagenet_plan
from eps_resnet.reduction import Reduction
from eps_resnet.tfcompat import tf, tfv1
from eps_resnet.rundir import discarded_in_record
from tests import datafiles
from tests.processes import ROOT, assert_one_line_error, run_script, run_scripts

pytestmark = pytest.mark.slow  # trains or exports through the real scripts (make test-fast skips it)

def clean_logits(artefact, images, tmp_path, program="load_export.py"):
    """Logits of an exported artefact in a process that imports plain TensorFlow only."""
    np.save(str(tmp_path / "x.npy"), images)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "programs", program), artefact,
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(str(tmp_path / "y.npy"))


def gated_logits(logdir, images):
    from eps_resnet.prune import calibrate, load_run
    logits = calibrate(load_run(logdir), images).logits
    return logits


def listing(path):
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs}


@pytest.fixture(scope="session")
def demo_export(demo):
    """The demo's export (prune_export.py EPS_RUN --out EXPORT --baseline PLAIN_RUN --quantize dynamic)."""
    logdir, out = demo["eps"], demo["export"]
    # the log directory is never written: each of its files is older than every file of the export
    assert max(listing(logdir).values()) < min(listing(out).values())
    return logdir, out, demo["proc"]


def test_demo_export_in_a_clean_process_scores_what_its_report_says(demo_export, tmp_path):
    """TF Serving's layout (OUT/1/) and the float32 TFLite file, each loaded by plain TensorFlow in a fresh process
    on the 360 real held-out images: the same logits, the error of the report. The demo re-estimates BatchNorm
    statistics (--recompute-bn): the report gives the error with training's statistics and with the new ones."""
    logdir, out, proc = demo_export
    from eps_resnet.data import load_arrays
    images, labels = load_arrays("digits", "test")
    report = json.load(open(os.path.join(out, "report.json")))
    exported = clean_logits(os.path.join(out, "1"), images, tmp_path)
    assert np.mean(exported.argmax(1) != labels) == pytest.approx(report["val_error_export"], abs=1e-9)
    assert report["val_error_export"] <= 0.05
    lite = clean_logits(os.path.join(out, "model.tflite"), images, tmp_path, program="load_tflite.py")
    np.testing.assert_allclose(lite, exported, atol=1e-4, rtol=0)
    assert (lite.argmax(1) == exported.argmax(1)).all()
    bn = report["recomputed_bn"]
    assert bn["images"] == 20 * 64 and bn["layers"] > 0 and 0 <= bn["val_error_trained_statistics"] <= 1
    assert report["baseline_bn_recomputed"] is True
    from eps_resnet.report import comparison_line
    assert report["baseline_title"] == "ResNet-32" and "(plain ResNet-32)" in comparison_line(report)
    assert "(plain WRN-16-4)" in comparison_line(dict(report, baseline_title="WRN-16-4"))  # not "ResNet-14"
    assert report["error_change"] == pytest.approx(report["val_error_export"] - report["val_error_gated"])
    assert "BatchNorm statistics re-estimated for the reduced network on 1280 training images" in proc.stdout


def test_demo_export_layout_is_what_serving_stacks_expect(demo_export):
    _, out, proc = demo_export
    top = sorted(os.listdir(out))
    assert top == sorted(["1", ".eps-resnet-export", "model.tflite", "model_dynamic.tflite", "plan.json",
                          "reduction.json", "report.json", "report.md", "figures"]), top  # figures/: the demo's
    report = json.load(open(os.path.join(out, "report.json")))
    assert Reduction.load(os.path.join(out, "reduction.json")) == Reduction(tuple(report["discarded"]))
    assert sorted(os.listdir(os.path.join(out, "1"))) == ["saved_model.pb", "variables"]
    for d, dirs, files in os.walk(out):  # readable by a serving user, not only by the one who exported
        assert os.stat(d).st_mode & 0o055 == 0o055, d
        for f in files:
            assert os.stat(os.path.join(d, f)).st_mode & 0o044 == 0o044, f
    report = json.load(open(os.path.join(out, "report.json")))
    artefacts = report["artefacts"]
    assert sorted(artefacts) == ["1", "model.tflite", "model_dynamic.tflite"]
    for name in ("1", "model.tflite"):
        assert artefacts[name]["top1_agreement"] == 1.0 and artefacts[name]["max_abs_diff"] <= 1e-3
    assert artefacts["model.tflite"]["bytes"] == os.path.getsize(os.path.join(out, "model.tflite"))
    assert artefacts["model_dynamic.tflite"]["bytes"] < artefacts["model.tflite"]["bytes"] / 2
    assert all(a["latency_b1_ms"] > 0 for a in artefacts.values())
    text = open(os.path.join(out, "report.md")).read()
    assert "model_dynamic.tflite" in text and "latency, batch 1" in text
    assert "SavedModel in 1/, model.tflite, model_dynamic.tflite" in proc.stdout


def modes(folder):
    found = {stat.S_IMODE(os.stat(folder).st_mode)}
    for d, dirs, files in os.walk(folder):
        found |= {stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for n in dirs + files}
    return found


def export_with_umask_077(*args):
    """prune_export.py under umask 077 (a user who keeps their files private by default)."""
    command = " ".join([sys.executable, os.path.join(ROOT, "prune_export.py")] + [shlex.quote(str(a)) for a in args])
    proc = subprocess.run("umask 077 && exec " + command, shell=True, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_new_version_is_added_beside_the_earlier_one(demo_export, tmp_path):
    """Beside any version (an export begun with --version 2 once asked for --force, which would delete it), with
    the files readable by others whatever the umask."""
    logdir, out, _ = demo_export
    target = str(tmp_path / "served")
    shutil.copytree(out, target)
    os.rename(os.path.join(target, "1"), os.path.join(target, "2"))
    export_with_umask_077(logdir, "--out", target, "--version", "3", "--no-timing", "--calib-batches", "1")
    assert os.path.isfile(os.path.join(target, "2", "saved_model.pb"))
    assert os.path.isfile(os.path.join(target, "3", "saved_model.pb"))
    assert json.load(open(os.path.join(target, "report.json")))["version"] == 3
    assert modes(os.path.join(target, "3")) == {0o755, 0o644}
    assert_one_line_error(run_script("prune_export.py", logdir, "--out", target, "--version", "3"),
                          "already holds version 3")


def test_demo_export_removes_the_discarded_blocks_and_reports(demo_export):
    logdir, out, proc = demo_export
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    last = [json.loads(l) for l in open(os.path.join(logdir, "discards.jsonl"))][-1]
    closed = discarded_in_record(last)
    # removed: exactly the blocks below ε on every held-out image; they are (nearly) the blocks training had
    # closed (its moving averages come from augmented training batches, calibration from clean held-out images)
    below = sorted(e["block"] for e in report["evidence"] if e["calibration_max"] < report["epsilon"])
    assert sorted(report["discarded"]) == below and len(set(closed) & set(below)) >= len(closed) - 1 and closed
    reduced = Plan.load(os.path.join(out, "plan.json"))
    assert sorted(b.name for b in reduced.discarded_blocks) == below
    assert report["verification"]["top1_agreement"] == 1.0 and report["verification"]["max_abs_diff"] <= 1e-3
    assert report["params_after"] < report["params_before"] and report["compression_ratio"] > 1
    assert report["latency_b64"]["speedup"] > 0 and report["ideal_speedup"] > 1
    text = open(os.path.join(out, "report.md")).read()
    assert "kept / total blocks" in text and "Compression ratio" in text
    assert "Compression ratio" in proc.stdout


def test_plain_run_exports_the_full_network_and_warm_starts_a_gated_run(tmp_path):
    logdir = str(tmp_path / "plain")
    run_script("train_cifar.py", "--demo", "--plain", "-n", "1", "--max-epoch", "1", "--steps-per-epoch", "3",
               "--logdir", logdir, check=True)
    out = str(tmp_path / "export")
    # side by side: the export, and a gated run started from the plain checkpoint (which has no ε variable)
    proc, _ = run_scripts(("prune_export.py", logdir, "--out", out, "--no-timing", "--calib-batches", "2"),
                          ("train_cifar.py", "--demo", "-n", "1", "--load", logdir, "--max-epoch", "1",
                           "--steps-per-epoch", "2", "--logdir", str(tmp_path / "warm")), check=True)
    assert "plain ResNet (no gates): no block can be discarded" in proc.stdout
    reduced = Plan.load(os.path.join(out, "plan.json"))
    assert reduced == cifar_plan(1, image_size=16) and not reduced.discarded_blocks
    assert os.path.exists(str(tmp_path / "warm" / "model-2.index"))


CLOSED_GATES = ("--demo", "-n", "1", "-e", "1e6", "--epsilon-start", "0", "--max-epoch", "1", "--steps-per-epoch", "3")


def test_every_block_of_basic_wide_and_bottleneck_resnets_can_be_removed_and_exported_verified(tmp_path):
    """ε so large that every gate is closed, so every block goes, the first ones of groups included. Basic blocks
    (res2.0/res3.0 keep their pool + zero-pad shortcuts), --width 2 (WRN-10-2) and --bottleneck (ResNet-11, the
    pre-activation paper's units): where channels change the 1x1 convolution shortcut (fed by the block's BN+ReLU)
    survives the removal of the residual branch, and the export reproduces the gated model. The three networks
    train and export side by side."""
    networks = {"basic": (), "wide": ("--width", "2"), "bottleneck": ("--bottleneck",)}
    logdirs = {name: str(tmp_path / name) for name in networks}
    outs = {name: str(tmp_path / (name + "-export")) for name in networks}
    trained = run_scripts(*[("train_cifar.py", *CLOSED_GATES, *flags, "--logdir", logdirs[name])
                            for name, flags in networks.items()], check=True)
    exported = run_scripts(*[("prune_export.py", logdirs[name], "--out", outs[name], "--no-timing", "--calib-batches",
                              "2") for name in networks], check=True)
    trained, exported = dict(zip(networks, trained)), dict(zip(networks, exported))

    reduced = Plan.load(os.path.join(outs["basic"], "plan.json"))
    assert [b.name for b in reduced.discarded_blocks] == ["res1.0", "res2.0", "res3.0"]

    from eps_resnet.data import load_arrays
    images = load_arrays("digits", "test")[0][:64]
    for name in ("wide", "bottleneck"):
        assert "discarded blocks: 3 of 3" in trained[name].stdout
        plan = Plan.load(os.path.join(logdirs[name], "plan.json"))
        wide = name == "wide"
        assert plan == cifar_plan(1, image_size=16, width=2 if wide else 1, bottleneck=not wide)
        assert plan.title == ("WRN-10-2" if wide else "ResNet-11")
        channels = [32, 64, 128] if wide else [64, 128, 256]
        assert [b.out_channels for b in plan.blocks] == channels
        assert [(b.preact, b.shortcut) for b in plan.blocks] == [("none", "conv"), ("both", "conv"), ("both", "conv")]
        assert "max |logit difference|" in exported[name].stdout
        assert len(Plan.load(os.path.join(outs[name], "plan.json")).discarded_blocks) == 3
        report = json.load(open(os.path.join(outs[name], "report.json")))
        # what is left: the stem, three 1x1 shortcuts (with their BN+ReLU after the first), the head
        a, b, c = channels
        assert report["params_after"] == 16 * 27 + 32 + (16 * a) + (2 * a + a * b) + (2 * b + b * c) + 2 * c + c * 10 + 10
        assert report["verification"]["top1_agreement"] == 1.0
        # the SavedModel, loaded by plain TensorFlow in a fresh process, computes the gated model
        np.testing.assert_allclose(clean_logits(os.path.join(outs[name], "1"), images, tmp_path),
                                   gated_logits(logdirs[name], images), atol=1e-4, rtol=0)


def test_imagenet_first_blocks_of_groups_can_be_removed(tmp_path):
    """Also: a run with the released augmentation keeps its input normalisation through the export; and the
    channel regulariser trains on an ImageNet network, whose export (every slot below its norm: each channel group
    keeps its strongest channel) slices the stem, the 1x1 projection shortcuts and the classifier."""
    data = str(tmp_path / "imagenet")
    datafiles.write_imagenet(data, per_class=4)
    logdir = str(tmp_path / "run")
    run_script("train_imagenet.py", "--data", data, "-d", "18", "--image-size", "32", "--batch", "4", "-e", "1e6",
               "--max-epoch", "1", "--steps-per-epoch", "2", "--workers", "0", "--logdir", logdir, "--aug", "released",
               "--channel-penalty", "0.01", check=True)
    out = str(tmp_path / "export")
    proc = run_script("prune_export.py", logdir, "--out", out, "--no-timing", "--channel-threshold", "1e9", check=True)
    reduced = Plan.load(os.path.join(out, "plan.json"))
    assert len(reduced.discarded_blocks) == 8
    b = reduced.block("group1/block0")
    assert not b.residual and b.shortcut == "conv" and b.preact == "both"
    assert reduced.stem_channels == 1 and b.out_channels == 1 and reduced.num_params < 1000
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["channels"]["reference_max_abs_diff"] <= 1e-3
    assert "max |logit difference|" in proc.stdout
    # the released code normalised BGR images with RGB-ordered constants: on RGB images, the reversed constants
    ckpt = tf.train.load_checkpoint(tf.train.latest_checkpoint(logdir))
    np.testing.assert_allclose(ckpt.get_tensor("channel_mean"), [0.406, 0.456, 0.485], rtol=1e-6)
    np.testing.assert_allclose(ckpt.get_tensor("channel_std"), [0.225, 0.224, 0.229], rtol=1e-6)
    graph = tf.Graph()
    with graph.as_default(), tfv1.Session(graph=graph) as sess:
        tfv1.saved_model.loader.load(sess, ["serve"], os.path.join(out, "1"))
        served = sess.run([v for v in tfv1.global_variables() if v.op.name == "channel_mean"][0])
    np.testing.assert_allclose(served, [0.406, 0.456, 0.485], rtol=1e-6)


def test_imagenet_checkpoint_without_normalisation_variables_restores_the_intended_constants(tmp_path):
    """Checkpoints written before the normalisation became variables restore with the constants they used."""
    plan = imagenet_plan(18, num_classes=3, image_size=32)
    net = build_inference_graph(plan)
    with net.graph.as_default():
        keep = [v for v in tfv1.global_variables() if v.op.name not in ("channel_mean", "channel_std")]
        with tfv1.Session(graph=net.graph) as sess:
            sess.run(tfv1.global_variables_initializer())
            old = tfv1.train.Saver(var_list=keep).save(sess, str(tmp_path / "model-1"))
    check_checkpoint_matches(plan, old)
    net = build_inference_graph(plan)
    with net.session(old) as sess, net.graph.as_default():
        mean = sess.run([v for v in tfv1.global_variables() if v.op.name == "channel_mean"][0])
    np.testing.assert_allclose(mean, [0.485, 0.456, 0.406], rtol=1e-6)


def test_bad_export_requests(demo_export, tmp_path):
    logdir, out, _ = demo_export
    export_before = listing(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    # a plan of another depth next to this checkpoint: the first missing variable is named
    other = tmp_path / "other"
    shutil.copytree(logdir, str(other))
    cifar_plan(6, image_size=16).save(str(other / "plan.json"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # a run whose calibration data is gone
    moved = tmp_path / "moved"
    shutil.copytree(logdir, str(moved))
    run_json = json.loads((moved / "run.json").read_text())
    run_json["recipe"].update(dataset="cifar10", data_dir=str(tmp_path / "cifar" / "moved-away"))
    (moved / "run.json").write_text(json.dumps(run_json))
    cifar_plan(2).save(str(moved / "plan.json"))
    x = str(tmp_path / "x")
    requests = [  # (command, what its one error line says)
        (("prune_export.py", logdir, "--out", out), ("already holds version 1", "--force")),
        (("prune_export.py", str(empty), "--out", x), ("plan.json",)),
        # --baseline must be a plain run on the same data
        (("prune_export.py", logdir, "--out", x, "--baseline", logdir), ("is an ε-ResNet run", "--plain")),
        (("prune_export.py", logdir, "--out", x, "--baseline", str(tmp_path / "nowhere")), ("does not exist",)),
        (("prune_export.py", logdir, "--out", x, "--recompute-bn", "-1"),
         ("--recompute-bn takes a number of training batches",)),
        (("prune_export.py", logdir, "--out", x, "--channel-threshold", "-1"), ("--channel-threshold takes",)),
        (("prune_export.py", str(other), "--out", str(tmp_path / "y")), ("does not match this network", "res1.5/")),
        (("prune_export.py", logdir, "--out", str(blocker / "sub")), ("cannot write",)),
        (("prune_export.py", str(moved), "--out", str(tmp_path / "z")), ("does not exist",))]
    for proc, (_, fragments) in zip(run_scripts(*[command for command, _ in requests]), requests):
        assert_one_line_error(proc, *fragments)
    assert listing(out) == export_before
    for name in ("x", "y", "z"):
        assert not (tmp_path / name).exists()
    assert not [p for p in os.listdir(str(tmp_path)) if p.startswith(".export-")]


NO_TENSORFLOW = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("TensorFlow was imported")
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("flag,value,says", [("--version", "0", "--version must be a positive integer"),
                                             ("--recompute-bn", "-1", "--recompute-bn takes a number"),
                                             ("--calib-batches", "0", "--calib-batches takes a number"),
                                             ("--channel-threshold", "-1", "--channel-threshold takes"),
                                             ("--channel-threshold", "inf", "--channel-threshold takes a finite"),
                                             ("--epsilon", "inf", "--epsilon must be a finite")])
def test_a_bad_export_flag_is_answered_before_tensorflow_loads(tmp_path, flag, value, says):
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, os.path.join(ROOT, "prune_export.py"),
                           str(tmp_path / "no-run"), "--out", str(tmp_path / "x"), flag, value],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, says)
    assert not (tmp_path / "x").exists()


def test_force_replaces_only_an_earlier_export_after_verification(demo_export, tmp_path):
    logdir, out, _ = demo_export
    target = tmp_path / "exports" / "target"
    shutil.copytree(out, str(target))
    (target / "old.txt").write_text("previous export")
    link = tmp_path / "link"
    os.symlink(str(target), str(link))  # through a symlink: the folder it points to is replaced, the link stays
    export_with_umask_077(logdir, "--out", str(link), "--force", "--no-timing")
    assert not (target / "old.txt").exists() and (target / "1" / "saved_model.pb").exists()
    assert (target / ".eps-resnet-export").exists() and os.path.realpath(str(link)) == str(target)
    assert modes(str(target)) == {0o755, 0o644}
    assert os.listdir(str(tmp_path / "exports")) == ["target"]  # no *.replaced-<pid>, no staging
    # a directory that is not an export is never replaced, --force or not
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert_one_line_error(run_script("prune_export.py", logdir, "--out", str(mine), "--force"), "not an export")
    assert os.listdir(str(mine)) == ["notes.txt"]


def test_the_demos_export_builds_each_network_once_and_reports_the_same(demo_export, tmp_path, monkeypatch):
    """The demo's export again, in this process: the trained, reduced and baseline networks are each built once
    (calibration, logits under other weights, the SavedModel and timing reuse them), plus one training-mode graph
    per BatchNorm re-estimation: five graphs in all. The result is the demo's export."""
    from eps_resnet import network
    from eps_resnet.export_request import ExportRequest
    from eps_resnet.prune import export
    from eps_resnet.tfcompat import tfv1
    logdir, out, _ = demo_export
    report = json.load(open(os.path.join(out, "report.json")))
    graphs = []
    forward = network.forward

    def counted(*args, **kwargs):  # the real network, noting the graph it is built in
        graphs.append(tfv1.get_default_graph())
        return forward(*args, **kwargs)
    monkeypatch.setattr(network, "forward", counted)
    again = export(logdir, str(tmp_path / "again"), ExportRequest(
        baseline=report["baseline_logdir"], quantize="dynamic", recompute_bn=report["recomputed_bn"]["images"] // 64),
        log=lambda m: None)
    assert len(set(map(id, graphs))) == len(graphs) == 5
    for key in ("discarded", "val_error_export", "val_error_gated", "baseline_val_error", "recomputed_bn",
                "params_after", "flops_after", "verification"):
        assert again[key] == report[key], key
