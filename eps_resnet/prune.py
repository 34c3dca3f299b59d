"""From a training log directory to a verified SavedModel of the reduced network (paper Sec. 3, weight collapse and removal).

`export()` runs typed phases over networks built once each (inference.BuiltNetwork):
1. decide: the trained (gated) network runs over held-out images and each block's per-example max|F| is read;
   then each pruning method of the run (eps_resnet.methods) narrows what is removed: ε-ResNet's gates remove a
   block when max|F| < ε on every example (`criterion="calibration"`), or, as the released code did, when its
   moving average of is_discarded at the checkpoint's epoch is 1 (`"ema"`); channels go below a norm. -> Decision,
   whose `reduction.Reduction` gives the reduced plan, and the reference a method may name (checked here).
2. weights: the run's, restored by name into the reduced network, or with BatchNorm statistics re-estimated for
   it (precise_bn). -> Weights
3. artefacts: the SavedModel (`serving_default`: uint8 `image` -> `logits`, `probabilities`, `classes`) and TFLite
   files, written from the reduced network's session, with plan.json and reduction.json.
4. verify: each artefact in a clean Python process that imports only TensorFlow, against the gated model's
   logits (or the reduced network's own, when the export changed the function); then size, speed (the two
   networks in alternating rounds), the report, and only then the rename into place.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import UserError
from .commands import number, training_command
from .data import build_dataflow, dataset_info
from .fileio import atomic_write_text
from .inference import BuiltNetwork, interleaved_times
from .export_request import TFLITE_FILES, ExportRequest, check_calib_batches
from .methods import Calibration, Decision, PruningMethod, Reference, check_export_epsilon, export_methods
from .outputs import ADD, REPLACE, Staging, check_out
from .plan import Plan
from . import rundir
from .reduction import REDUCTION_FILE, Reduction, reduced_plan
from .rundir import (DISCARDS_FILE, EXPORT_MARKER, PLAN_FILE, Run, is_export, record_of_epoch,
                     resolve_checkpoint)

SIGNATURE = "serving_default"
MAX_ABS_DIFF = 1e-3
CALIBRATION_BATCH = 64  # the gated model decides its gates per batch of this many calibration images

STANDALONE_CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standalone_check.py")


@dataclass
class RunInfo:
    logdir: str
    plan: Plan
    recipe: dict
    checkpoint: str
    records: list = field(default_factory=list)
    requested: bool = False  # the user named the checkpoint (else: the newest intact one)
    steps_per_epoch: int = 1

    @property
    def epoch(self) -> int:
        """The epoch the checkpoint ends."""
        import tensorflow as tf
        return int(tf.train.load_checkpoint(self.checkpoint).get_tensor("global_step")) // self.steps_per_epoch

    @property
    def record(self) -> Optional[dict]:
        """The discards.jsonl record of the checkpoint's epoch (not simply the last one written)."""
        return record_of_epoch(self.records, self.epoch)

    @property
    def gated(self):
        return self.recipe.get("epsilon") is not None


def load_run(logdir: str, checkpoint: Optional[str] = None) -> RunInfo:
    run = Run.open(logdir)
    ckpt = run.checkpoint(checkpoint)
    if ckpt is None:
        raise UserError("no checkpoint %sin %s; train first, or pass --checkpoint STEP|PATH"
                        % ("model-%s " % checkpoint if checkpoint else "", logdir))
    return RunInfo(logdir, run.plan, run.recipe, ckpt, run.records(), requested=checkpoint is not None,
                   steps_per_epoch=run.steps_per_epoch)


def snapshot_checkpoint(run: RunInfo, folder: str) -> RunInfo:
    """Point `run` at a hard-linked copy of its checkpoint (rundir.snapshot_checkpoint)."""
    newest = None if run.requested else lambda: resolve_checkpoint(run.logdir)
    run.checkpoint = rundir.snapshot_checkpoint(run.checkpoint, folder, newest)
    return run


def calibration_images(run: RunInfo, data_dir: Optional[str] = None, batches: Optional[int] = None,
                       batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,H,W,3], labels [N]) of the dataset's validation split (the first `batches` batches)."""
    check_calib_batches(batches)
    dataset = run.recipe["dataset"]
    data_dir = data_dir or run.recipe.get("data_dir")
    if run.recipe.get("fake_data"):
        raise UserError("this run trained on --fake data; pass --data DIR with the real validation images")
    ds = build_dataflow(dataset, dataset_info(dataset).val_split, batch_size, data_dir=data_dir,
                        image_size=run.plan.image_size)
    ds.reset_state()
    images, labels = [], []
    for i, (x, y) in enumerate(ds):
        if batches is not None and i >= batches:
            break
        images.append(x)
        labels.append(y)
    if not images:
        raise UserError("no calibration images found for %s in %s" % (dataset, data_dir))
    return np.concatenate(images), np.concatenate(labels)


def gated_network(run: RunInfo, image_shape) -> BuiltNetwork:
    """The run's network as trained (gated for an ε-ResNet), its weights restored."""
    return BuiltNetwork(run.plan, run.checkpoint, epsilon=run.recipe.get("epsilon"), image_shape=image_shape)


def calibrate(run: RunInfo, images: np.ndarray, net: Optional[BuiltNetwork] = None,
              batch_size: int = CALIBRATION_BATCH) -> Calibration:
    """The trained (gated) model over `images`, in `net` or a network built for the call: logits [N, C], per-block
    per-example max|F| {block: [N]}, and ε."""
    own = net is None
    net = gated_network(run, images.shape[1:]) if own else net
    try:
        outs = net.run(dict(net.net.response_max, logits=net.net.logits), images, batch_size)
        epsilon = float(net.sess.run(net.net.epsilon)) if net.net.epsilon is not None else None
    finally:
        if own:
            net.close()
    logits = outs.pop("logits")
    return Calibration(logits, outs, epsilon)


def network_logits(plan: Plan, checkpoint: str, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> np.ndarray:
    """Logits [N, C] of the plain network of `plan` (a reduced plan: its removed blocks are shortcuts) on `images`."""
    net = BuiltNetwork(plan, checkpoint, image_shape=images.shape[1:])
    try:
        return net.logits(images, batch_size)
    finally:
        net.close()


def load_baseline(baseline_logdir: str, run: RunInfo) -> RunInfo:
    """The plain run to compare with (its newest checkpoint), after checking that it is plain and on the same data."""
    base = load_run(baseline_logdir)
    if base.gated:
        raise UserError("--baseline %s is an ε-ResNet run; pass the log directory of a plain run (trained with --plain)"
                        % baseline_logdir)
    for what, mine, theirs in (("data set", run.recipe["dataset"], base.recipe["dataset"]),
                               ("image size", run.plan.image_size, base.plan.image_size),
                               ("class count", run.plan.num_classes, base.plan.num_classes)):
        if mine != theirs:
            raise UserError("--baseline %s has %s %s, this run %s; pass a plain run on the same data"
                            % (baseline_logdir, what, theirs, mine))
    return base


def baseline_report(base: RunInfo, images: np.ndarray, labels: np.ndarray, bn_checkpoint: Optional[str] = None) -> dict:
    """The plain baseline's validation error on the export's own held-out images (with the BatchNorm statistics of
    `bn_checkpoint` when the export re-estimated them: the baseline gets the same treatment)."""
    logits = network_logits(base.plan, bn_checkpoint or base.checkpoint, images)
    return {"baseline_logdir": os.path.abspath(base.logdir), "baseline_checkpoint": base.checkpoint,
            "baseline_layers": base.plan.full_depth, "baseline_title": base.plan.title,
            "baseline_params": base.plan.num_params,
            "baseline_val_error": float(np.mean(logits.argmax(1) != labels)),
            "baseline_bn_recomputed": bool(bn_checkpoint)}


def block_evidence(run: RunInfo, calibration: Calibration) -> List[dict]:
    """The per-block table of an export, nothing removed yet (BlockGates marks its removals)."""
    last = run.record["blocks"] if run.record else {}
    maxima = calibration.maxima
    return [{"block": b.name, "group": b.group, "calibration_max": float(maxima[b.name].max()) if b.name in maxima
             else None, "epsilon": calibration.epsilon, "ema_is_discarded": last.get(b.name, {}).get("is_discarded"),
             "kernel_norm": last.get(b.name, {}).get("kernels", {}).get("norm"), "discarded": False}
            for b in run.plan.blocks if b.residual]


def kept_gates_closed(n: int, maxima: Dict[str, np.ndarray], epsilon: Optional[float], discarded: List[str],
                      batch_size: int = CALIBRATION_BATCH) -> Tuple[np.ndarray, Dict[str, int]]:
    """Where the gated model and the reduced network may differ although both are right.

    A kept block is one whose response exceeded ε on some calibration image; the reduced network applies it always.
    The gated model decides per batch, so on a batch whose images all stay below ε the kept block's gate is shut
    there. Returns a mask of the images in batches where every kept gate was open (where the two must agree
    exactly), and {block: batches where its gate was shut} for the kept blocks that shut on some batch."""
    agree = np.ones(n, bool)
    shut = {}
    if epsilon is None:
        return agree, shut
    for name, values in maxima.items():
        if name in discarded:
            continue
        batches = [i for i in range(0, n, batch_size) if values[i:i + batch_size].max() <= epsilon]
        if batches:
            shut[name] = len(batches)
            for i in batches:
                agree[i:i + batch_size] = False
    return agree, shut


def reestimate_bn(plan: Plan, run: RunInfo, data_dir: Optional[str], batches: int, out_checkpoint: str,
                  checkpoint: Optional[str] = None) -> dict:
    """precise_bn.recompute_bn_statistics of `plan` from `checkpoint` (default: the run's) on its training split."""
    from .precise_bn import recompute_bn_statistics, training_batches
    data_dir = data_dir or run.recipe.get("data_dir")
    images = training_batches(run.recipe["dataset"], data_dir, run.plan.image_size, batches)
    return recompute_bn_statistics(plan, checkpoint or run.checkpoint, images, out_checkpoint)


def write_saved_model(plan: Plan, ckpt: str, export_dir: str, image_shape=None):
    """The plain network of `plan` (weights from `ckpt`) as a SavedModel."""
    net = BuiltNetwork(plan, ckpt, image_shape=image_shape)
    try:
        net.write_saved_model(export_dir, SIGNATURE)
    finally:
        net.close()


def standalone_results(saved_model: str, tflite_files: List[str], images: np.ndarray, workdir: str) -> dict:
    """{artefact: (logits on `images`, median seconds at batch 1)} for the SavedModel ("saved_model") and each
    .tflite file (by file name), measured in a fresh process that imports only TensorFlow."""
    data = os.path.join(workdir, "calibration.npz")
    out = os.path.join(workdir, "results.npz")
    np.savez(data, images=images)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    program = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", program, STANDALONE_CHECK, saved_model, data, out] + tflite_files,
                          capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError("the export did not load in a clean process:\n" + proc.stderr[-3000:])
    with np.load(out) as results:
        names = sorted({k.split("/")[0] for k in results.files})
        return {n: (results[n + "/logits"], float(results[n + "/latency_b1"])) for n in names}


def write_tflite(saved_model: str, path: str, quantize: Optional[str] = None):
    """The SavedModel as a TFLite flat buffer: float32, or with dynamic-range quantised weights."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with open(path, "wb") as f:
        f.write(converter.convert())


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)




def check_output(out: str, logdir: str, force: bool) -> str:
    """The absolute --out, after refusing every place an export must not go: the log directory, anything inside
    it or containing it (through symlinks and '..' too), any other run's directory (outputs.check_out), and an
    existing directory that is not an earlier export (--force replaces an earlier export, never anything else)."""
    out = check_out(out, source=logdir)
    if os.path.lexists(out):
        if not is_export(os.path.realpath(out)):
            raise UserError("--out %s exists and is not an export of prune_export; --force replaces only an earlier "
                            "export: choose a new directory" % out)
        if not force:
            raise UserError("%s already exists; choose another --out or pass --force to replace it (after the new "
                            "export verified)" % out)
    return out


def export(logdir: str, out: str, request: ExportRequest = ExportRequest(), log=print) -> dict:
    """The whole pipeline; returns the report dict. On any failure nothing is left at `out`.

    `out` gets the SavedModel in `out/<version>/` (TensorFlow Serving's layout), `model.tflite` (and
    `model_dynamic.tflite` with quantize="dynamic"), plan.json, report.md and report.json beside it. An existing
    export is replaced with `force`, or keeps its other versions when `version` is new to it.

    An `epsilon` above the trained ε exports a point of the ε frontier (eps_resnet.frontier): the blocks whose
    largest calibration response stays below it are removed too. `recompute_bn` re-estimates the reduced network's
    BatchNorm statistics (eps_resnet.precise_bn; the baseline's too). A `channel_threshold` (by default the channel
    method's, for a run trained with --channel-penalty) also removes every channel slot whose norm in the kept
    network is below it; the reduced network must then compute what the kept network computes with those slots'
    weights zeroed (checked here). Each of these changes the function: the artefacts are then verified against the
    reduced network computed here, and the report gives the error change."""
    r = request.check()  # before anything is read
    adding = is_export(out) and not r.force  # a new version beside the ones an earlier export holds
    if adding and os.path.exists(os.path.join(out, str(r.version))):
        raise UserError("%s already holds version %d; pass another --version to add one, or --force to replace the "
                        "whole export" % (out, r.version))
    out = check_output(out, logdir, r.force or adding)
    run = load_run(logdir, r.checkpoint)
    base = load_baseline(r.baseline, run) if r.baseline else None
    check_export_epsilon(r.epsilon, run, r.criterion)
    methods = export_methods(run.recipe, r.epsilon, r.criterion, r.channel_threshold)
    if r.criterion == "ema" and run.record is None:
        raise UserError("--criterion ema needs the record of epoch %s (the checkpoint's) in %s of %s; use the default "
                        "calibration criterion" % (run.epoch, DISCARDS_FILE, logdir))
    quiet_layer_logs()
    with Staging(out, "export", ADD if adding else REPLACE, version=str(r.version)) as stage, \
            contextlib.ExitStack() as networks:
        staging = stage.path
        snapshot_checkpoint(run, os.path.join(staging, ".checkpoint"))
        images, labels = calibration_images(run, r.data_dir, r.calib_batches)
        log("calibration: %d held-out images, checkpoint %s" % (len(images), os.path.basename(run.checkpoint)))
        trained = networks.enter_context(contextlib.closing(gated_network(run, images.shape[1:])))
        decision = decide(run, trained, images, methods, os.path.join(staging, ".checkpoint"))
        reduced = networks.enter_context(contextlib.closing(
            BuiltNetwork(decision.plan, decision.checkpoint, image_shape=images.shape[1:])))
        if decision.reference:
            decision.details[decision.reference.method].update(check_reference(decision.reference, reduced, images,
                                                                               labels))
        for method in methods:
            if method.report_key in decision.details:
                line = method.decided_line(decision.details[method.report_key])
                if line:
                    log(line)
        weights = reduced_weights(run, reduced, decision, images, labels, r.data_dir, r.recompute_bn, base, staging,
                                  log)
        saved_model, tflite = write_artefacts(reduced, decision, staging, r.version, r.quantize)
        report = decision_report(run, decision, r, logdir, len(images))
        if base:
            report.update(baseline_report(base, images, labels, weights.baseline_checkpoint))
        if weights.bn_report:
            report["recomputed_bn"] = weights.bn_report
        if r.verify:
            exact = weights.changed or decision.above or decision.reference is not None
            report.update(verify_artefacts(decision, reduced, exact, images, labels, saved_model, tflite, staging,
                                           r.version))
        report.update(size_report(run.plan, decision.plan, saved_model, staging, trained))
        if r.measure:
            report.update(speed_report(trained, reduced))
        from .report import write_export_report
        write_export_report(report, run.plan, decision.plan, staging)
        atomic_write_text(os.path.join(staging, EXPORT_MARKER), json.dumps({"exported_from": report["logdir"]}) + "\n")
        shutil.rmtree(os.path.join(staging, ".checkpoint"))
    report["out"] = out
    return report


def decision_report(run: RunInfo, decision: Decision, request: ExportRequest, logdir: str, images: int) -> dict:
    """The report's account of what was removed and why, and for a frontier point the command that retrains there."""
    logdir = os.path.abspath(logdir)
    report = {"logdir": logdir, "checkpoint": os.path.join(logdir, os.path.basename(run.checkpoint)),
              "criterion": request.criterion, "epsilon": decision.calibration.epsilon, "gated": run.gated,
              "discarded": list(decision.reduction.removed_blocks), "evidence": decision.evidence,
              "calibration_images": int(images), "version": request.version}
    if decision.above:
        epsilon = request.epsilon
        report["export_epsilon"] = epsilon
        retrain = training_command(run.recipe, epsilon=epsilon, epsilon_start_epoch=0, resume=False,
                                   epsilon_tolerance=None, holdout=0,
                                   load=run.checkpoint if run.requested else run.logdir,
                                   logdir="%s-eps%s" % (logdir, number(epsilon)))
        report["retrain_command"], report["retrain_note"] = str(retrain), retrain.note()
    report.update(decision.details)
    return report


# ---- the export's phases: decide -> weights -> artefacts -> verify (then size, speed, report, publish) ---------
def decide(run: RunInfo, trained: BuiltNetwork, images: np.ndarray, methods: List[PruningMethod],
           folder: str) -> Decision:
    """The trained network over the calibration images, then each method in turn narrows what is removed."""
    calibration = calibrate(run, images, trained)
    decision = Decision(Reduction(), run.plan, block_evidence(run, calibration), calibration,
                        checkpoint=run.checkpoint)
    for method in methods:
        decision = method.decide(run, decision, folder)
    return replace(decision, plan=reduced_plan(run.plan, decision.reduction))


def check_reference(reference: Reference, reduced: BuiltNetwork, images, labels) -> dict:
    """The reduced network against the reference a method named (for channels: the kept network with the removed
    channels' weights zeroed): they must compute the same logits, else the reduction lost a connection."""
    net = BuiltNetwork(reference.plan, reference.checkpoint, image_shape=images.shape[1:])
    try:
        expected = net.logits(images, CALIBRATION_BATCH)
    finally:
        net.close()
    mine = reduced.logits(images, CALIBRATION_BATCH)
    diff, agree = float(np.abs(mine - expected).max()), float(np.mean(mine.argmax(1) == expected.argmax(1)))
    if agree < 1.0 or diff > MAX_ABS_DIFF:
        raise ExportVerificationFailed(
            "the reduced network does not compute its reference, the network with what %s removed zeroed (top-1 "
            "agreement %.4f, max |logit diff| %.3g > %g): nothing was exported" % (reference.method, agree, diff,
                                                                                   MAX_ABS_DIFF))
    return {"reference_max_abs_diff": diff, "val_error_reference": float(np.mean(expected.argmax(1) != labels))}


@dataclass
class Weights:
    """The reduced network's weights (loaded into its BuiltNetwork), and the baseline's when re-estimated."""
    changed: bool                          # BatchNorm statistics re-estimated: another function than trained
    bn_report: Optional[dict] = None
    baseline_checkpoint: Optional[str] = None


def reduced_weights(run: RunInfo, reduced: BuiltNetwork, decision: Decision, images, labels, data_dir,
                    recompute_bn: int, base: Optional[RunInfo], staging: str, log) -> Weights:
    """The run's weights, or with `recompute_bn` the reduced network's own BatchNorm statistics (and the
    baseline's alike); the error with training's statistics is measured first."""
    if not recompute_bn:
        return Weights(changed=False)
    folder = os.path.join(staging, ".checkpoint")
    trained_error = float(np.mean(reduced.logits(images).argmax(1) != labels))
    bn_report = reestimate_bn(decision.plan, run, data_dir, recompute_bn, os.path.join(folder, "bn-recomputed"),
                              decision.checkpoint)
    bn_report["val_error_trained_statistics"] = trained_error
    reduced.load(os.path.join(folder, "bn-recomputed"))
    log("BatchNorm statistics of the reduced network re-estimated on %d training images" % bn_report["images"])
    base_weights = None
    if base:
        base_weights = os.path.join(folder, "baseline-bn-recomputed")
        reestimate_bn(base.plan, base, data_dir, recompute_bn, base_weights)
    return Weights(True, bn_report, base_weights)


def write_artefacts(reduced: BuiltNetwork, decision: Decision, staging: str, version: int,
                    quantize: Optional[str]) -> Tuple[str, List[str]]:
    """The SavedModel in `<version>/`, the TFLite file(s), plan.json and reduction.json; (SavedModel, TFLite paths)."""
    saved_model = os.path.join(staging, str(version))
    reduced.write_saved_model(saved_model, SIGNATURE)
    decision.plan.save(os.path.join(staging, PLAN_FILE))
    decision.reduction.save(os.path.join(staging, REDUCTION_FILE))  # what was taken from the run's plan
    flavours = [None] + ([quantize] if quantize else [])  # float32 always, the quantised file when asked
    tflite = [os.path.join(staging, TFLITE_FILES[q]) for q in flavours]
    for path, q in zip(tflite, flavours):
        write_tflite(saved_model, path, q)
    return saved_model, tflite


def verify_artefacts(decision: Decision, reduced: BuiltNetwork, exact: bool, images, labels, saved_model: str,
                     tflite: List[str], staging: str, version: int) -> dict:
    """Every artefact, loaded in a clean process, against the reference: the gated model where the export keeps
    its function, else (`exact`: removed responses not zero, or new statistics) the reduced network itself."""
    with tempfile.TemporaryDirectory(dir=staging) as work:
        results = standalone_results(saved_model, tflite, images, work)
    calibration = decision.calibration
    report = {"val_error_gated": float(np.mean(calibration.logits.argmax(1) != labels))}
    if exact:
        reference = reduced.logits(images, CALIBRATION_BATCH)
        agree, shut = np.ones(len(images), bool), {}
    else:
        reference = calibration.logits
        agree, shut = kept_gates_closed(len(images), calibration.maxima, calibration.epsilon,
                                        list(decision.reduction.removed_blocks))
    if not agree.any():
        raise ExportVerificationFailed(
            "on every calibration batch some kept block's gate was shut (%s), so the reduced network cannot be "
            "compared with the gated model; calibrate on more images (--calib-batches)" % ", ".join(sorted(shut)))
    report["gates_shut_on_kept_blocks"] = {"batches": int(np.ceil(np.sum(~agree) / CALIBRATION_BATCH)),
                                           "of": int(np.ceil(len(images) / CALIBRATION_BATCH)),
                                           "blocks": shut, "images_compared": int(agree.sum())}
    report["artefacts"] = artefact_report(results, reference, labels, staging, str(version), agree)
    report["verification"] = {k: report["artefacts"][str(version)][k] for k in ("max_abs_diff", "top1_agreement")}
    report["val_error_export"] = report["artefacts"][str(version)]["val_error"]
    if exact:
        report["error_change"] = report["val_error_export"] - report["val_error_gated"]
    for name in (str(version), TFLITE_FILES[None]):  # the quantised file is measured, not required to match
        a = report["artefacts"][name]
        if a["top1_agreement"] < 1.0 or a["max_abs_diff"] > MAX_ABS_DIFF:
            raise ExportVerificationFailed(
                "the exported network (%s) does not reproduce the %s on the calibration images (top-1 "
                "agreement %.4f, max |logit diff| %.3g > %g); %s: nothing was exported"
                % (name, "reduced network computed here" if exact else "gated model", a["top1_agreement"],
                   a["max_abs_diff"], MAX_ABS_DIFF, "the artefact does not compute the reduced network" if exact
                   else "a removed block's gate must have opened on some batch"))
    return report


def artefact_report(results, gated_logits, labels, folder, version, agree=None) -> dict:
    """Per artefact: its agreement with the gated model (on the images where `agree`: there every kept gate was
    open), validation error on every image, size and latency at batch 1."""
    report = {}
    agree = np.ones(len(labels), bool) if agree is None else agree
    for name, (logits, seconds) in results.items():
        key = version if name == "saved_model" else name
        path = os.path.join(folder, key)
        mine, theirs = logits[agree], gated_logits[agree]
        report[key] = {"max_abs_diff": float(np.abs(mine - theirs).max()),
                       "top1_agreement": float(np.mean(mine.argmax(1) == theirs.argmax(1))),
                       "val_error": float(np.mean(logits.argmax(1) != labels)),
                       "bytes": dir_size(path) if os.path.isdir(path) else os.path.getsize(path),
                       "latency_b1_ms": seconds * 1e3}
    return report


def quiet_layer_logs():
    """tensorpack logs every layer's shapes each time a graph is built; the export builds several."""
    import logging
    from tensorpack.utils import logger
    logger._logger.setLevel(logging.WARNING)


class ExportVerificationFailed(Exception):
    """The export does not compute the trained function (exit code 1, nothing written)."""


def size_report(plan: Plan, reduced: Plan, export_dir: str, staging: str, trained: BuiltNetwork) -> dict:
    full_dir = os.path.join(staging, ".full")
    trained.write_saved_model(full_dir, SIGNATURE)  # the trained network in the export's format, for a fair size
    before = dir_size(full_dir)
    shutil.rmtree(full_dir)
    return {"layers_before": plan.full_depth, "layers_after": reduced.depth,
            "compression_ratio": plan.full_depth / reduced.depth,
            "params_before": plan.num_params, "params_after": reduced.num_params,
            "flops_before": plan.flops, "flops_after": reduced.flops,
            "bytes_before": before, "bytes_after": dir_size(export_dir)}


def speed_report(trained: BuiltNetwork, reduced: BuiltNetwork, repeats: int = 20) -> dict:
    """Median ms per forward pass of the trained (gated) and the reduced network at batch 1 and 64, measured in
    alternating rounds."""
    result = {}
    for batch in (1, 64):
        times = interleaved_times({"gated": trained.forward_pass(batch), "export": reduced.forward_pass(batch)},
                                  rounds=repeats)
        full, small = float(np.median(times["gated"])), float(np.median(times["export"]))
        result["latency_b%d" % batch] = {"gated_ms": full * 1e3, "export_ms": small * 1e3, "speedup": full / small}
    result["ideal_speedup"] = trained.plan.flops / reduced.plan.flops
    return result


