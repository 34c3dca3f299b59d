"""One `train(recipe)` for every entry script: log directory, data, model, callbacks, trainer, resume.

A log directory holds one run: plan.json, run.json (the recipe and the steps per epoch), checkpoints,
TensorBoard events, stats.json (tensorpack's per-epoch scalars), discards.jsonl and log.log. A new run
refuses a directory that holds anything; `resume=True` continues the run found there.
"""
import dataclasses
import logging
import os
import shutil
from typing import Optional, Sequence, Tuple

from . import UserError
from .auto_epsilon import read_choice
from .durability import (EpochCheckpoint, InputWatchdog, NaNGuard, StrictJSONWriter, TolerantInferenceRunner,
                         WeightsInit)
from .distributed import Ranks, cores_per_process
from .epoch_record import EpochRecorder
from .hyperparams import LearningRateSetter, PolicySetter, RankEpochLog
from .data import build_dataflow, dataset_info, load_arrays, per_pixel_mean
from .inference import check_checkpoint_matches
from .model import EpsResNet, imagenet_normalisation
from .schedule import LearningRatePolicy, WeightDecayPolicy
from .plan import Plan
from .recipes import Recipe, build_plan
from .rundir import (DISCARDS_FILE, discarded_in_record, LOADING_DIR, PLAN_FILE, Run, RunLock, has_content,
                     read_records, read_settings, read_stats, release_locks, resolve_checkpoint, set_aside_unfinished_start,
                     snapshot_checkpoint, trim_for_resume, write_settings)
from .tfcompat import session, tf, tfv1, visible_gpus

from tensorpack import (ClassificationError, DataParallelInferenceRunner, EstimatedTimeLeft, HorovodTrainer, QueueInput, ScalarPrinter,
                        ScalarStats, SimpleTrainer, SmartInit,
                        SyncMultiGPUTrainerReplicated, TFEventWriter, TrainConfig, launch_train_with_config)
from tensorpack.dataflow import FakeData
from tensorpack.tfutils.sesscreate import NewSessionCreator
from tensorpack.utils import logger
from tensorpack.utils.utils import fix_rng_seed


# ---- log directory -----------------------------------------------------------------------------------
def resolve_logdir(recipe: Recipe) -> str:
    return recipe.logdir or os.path.join("train_log", recipe.run_name())


def prepare_logdir(recipe: Recipe, plan: Plan) -> Tuple[str, Optional[str], Optional[RunLock]]:
    """Check the log directory; returns (logdir, checkpoint to resume or None, lock or None).

    A run to resume is locked at once; a new run's directory is created and locked only after every other
    check passed (create_logdir), so a failed start leaves nothing behind."""
    logdir = resolve_logdir(recipe)
    if not recipe.resume:
        if os.path.exists(logdir) and (not os.path.isdir(logdir) or has_content(logdir)):
            raise UserError("%s already holds a run; continue it with --resume or choose a new --logdir "
                            "(previous runs are never deleted)" % logdir)
        return logdir, None, None
    if not os.path.isdir(logdir) or not os.listdir(logdir):
        raise UserError("nothing to resume in %s: no run there; start a new run without --resume" % logdir)
    lock = RunLock(logdir).acquire()
    if not has_content(logdir):  # only the lock (or set-aside files) of a start killed before it wrote anything
        logger.warn("nothing written yet in %s (the earlier start stopped before its settings were saved); starting "
                    "afresh" % logdir)
        return logdir, None, lock
    try:
        saved = read_settings(logdir)
        conflicts = recipe.resume_conflicts(saved["recipe"])
        if conflicts:
            flag, then, now = conflicts[0]
            raise UserError("--resume: this command sets %s to %s, but the run in %s trained with %s; repeat the run's "
                            "setting, or start a new run from its weights with --load" % (flag, now, logdir, then))
        saved_plan = Plan.load(os.path.join(logdir, PLAN_FILE))
        if saved_plan != plan:
            raise UserError("%s holds a run of another network (%d blocks, depth %d) than the one asked for "
                            "(%d blocks, depth %d); resume with the same -n/-d and dataset flags"
                            % (logdir, len(saved_plan.blocks), saved_plan.full_depth, len(plan.blocks), plan.full_depth))
        for flag, then, now in recipe.resume_changes(saved["recipe"]):
            logger.info("resume: %s %s (the run was started with %s)" % (flag, now, then))
        ckpt = resolve_checkpoint(logdir)
        finished = max([r["epoch"] for r in read_records(logdir)] + [s.get("epoch_num", 0) for s in read_stats(logdir)]
                       + [0])
        if ckpt is None and finished > 1:  # a kill in epoch 1's commit leaves epoch 1's records: that one starts afresh
            raise UserError("%s holds the records of %d epochs but none of their checkpoints; restore the checkpoint "
                            "files (model-N.*), or start a new run" % (logdir, finished))
        if ckpt is None:
            aside = set_aside_unfinished_start(logdir)
            logger.warn("no checkpoint in %s: the earlier start stopped before its first epoch ended; its files are "
                        "kept in %s; starting afresh" % (logdir, aside))
    except BaseException:
        lock.release()
        raise
    return logdir, ckpt, lock


def check_records_cover(recipe: Recipe, logdir: str, starting_epoch: int):
    """A gated run resumes only with a record of every epoch its checkpoint trained: the adaptive learning rate
    and the discard history are read from them, and without them the run would silently go another way."""
    if recipe.plain:
        return
    have = {r["epoch"] for r in read_records(logdir)}
    missing = [e for e in range(1, starting_epoch) if e not in have]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise UserError("%s has no record of epoch(s) %s in %s, which the checkpoint trained; the learning-rate "
                        "schedule and the discard history are read from them: restore the file, or start a new run "
                        "from the checkpoint with --load %s" % (logdir, shown, DISCARDS_FILE, logdir))


def create_logdir(logdir: str, lock: Optional[RunLock] = None) -> RunLock:
    """Create and lock a new run's directory (after every other check passed); returns the lock."""
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as e:
        raise UserError("cannot write the log directory %s (%s); choose a writable --logdir" % (logdir, e.strerror))
    lock = lock or RunLock(logdir).acquire()
    if has_content(logdir):  # another run started here between our first look and the lock
        lock.release()
        raise UserError("%s already holds a run; continue it with --resume or choose a new --logdir" % logdir)
    try:
        probe = os.path.join(logdir, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        lock.release()
        raise UserError("cannot write the log directory %s (%s); choose a writable --logdir" % (logdir, e.strerror))
    return lock


def checkpoint_global_step(ckpt: str) -> int:
    return int(tf.train.load_checkpoint(ckpt).get_tensor("global_step"))


# ---- data ------------------------------------------------------------------------------------------
def build_data(recipe: Recipe, plan: Plan, batch_per_tower: int, write_cache: bool = True) -> tuple:
    """(train dataflow, validation dataflow or None, mean image or None)."""
    size = plan.image_size
    if recipe.fake_data:
        fake = FakeData([[batch_per_tower, size, size, 3], [batch_per_tower]], size=1000, random=False,
                        dtype=["uint8", "int32"], domain=[(0, 255), (0, plan.num_classes)])
        return fake, None, None
    workers = recipe.dataflow_workers()
    if dataset_info(recipe.dataset).in_memory:
        arrays = load_arrays(recipe.dataset, "train", recipe.data_dir)
        mean = per_pixel_mean(recipe.dataset, recipe.data_dir, images=arrays[0], write_cache=write_cache,
                              mean_from=recipe.mean_from)
        train = build_dataflow(recipe.dataset, "train", batch_per_tower, recipe.data_dir, workers=workers,
                               svhn_jitter=recipe.svhn_jitter, arrays=arrays, holdout=recipe.holdout)
        val = build_dataflow(recipe.dataset, dataset_info(recipe.dataset).val_split, batch_per_tower, recipe.data_dir)
        return train, val, mean
    if recipe.gpus and workers < 16:
        logger.warn("ImageNet on GPUs with %d dataflow workers: JPEG decoding may starve the GPUs (tensorpack's "
                    "ImageNet example asks for 16 or more); raise --workers on a machine with more cores" % workers)
    train = build_dataflow(recipe.dataset, "train", batch_per_tower, recipe.data_dir, workers=workers,
                           image_size=size, imagenet_aug=recipe.imagenet_aug, holdout=recipe.holdout)
    val = build_dataflow(recipe.dataset, dataset_info(recipe.dataset).val_split, batch_per_tower, recipe.data_dir,
                         workers=workers, image_size=size, imagenet_aug=recipe.imagenet_aug)
    return train, val, None


# ---- training ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunStart:
    """What rank 0 decides before the first step, and every rank needs."""
    logdir: str
    resume_ckpt: Optional[str]
    load_ckpt: Optional[str]
    steps_per_epoch: int
    starting_epoch: int
    records: list  # discards.jsonl records of the epochs before starting_epoch


def join_ranks(recipe: Recipe) -> Optional[Ranks]:
    """The Horovod ranks this process belongs to, or None when it trains alone (one or several towers)."""
    if recipe.engine != "horovod":
        return None
    ranks = Ranks()
    logger.info("Horovod: rank %d of %d (local rank %d)" % (ranks.rank, ranks.size, ranks.local_rank))
    if ranks.is_chief and visible_gpus() and not ranks.hvd.nccl_built():
        logger.warn("Horovod was built without GPU allreduce (NCCL): every gradient goes through host memory; "
                    "rebuild with HOROVOD_GPU_OPERATIONS=NCCL make horovod")
    return ranks


def per_rank_recipe(recipe: Recipe, ranks: Ranks) -> Recipe:
    """The recipe as one Horovod rank runs it: its share of a total batch, and the scaled LR if asked."""
    if recipe.batch_is_total and recipe.batch % ranks.size:
        raise UserError("--batch %d (total) does not divide over %d Horovod processes; use a multiple of %d"
                        % (recipe.batch, ranks.size, ranks.size))
    changes = {}
    if recipe.batch_is_total:
        changes["batch"] = recipe.batch // ranks.size
        changes["batch_is_total"] = False
    if recipe.scale_lr:
        changes["standard_lr"] = tuple((e, v * ranks.size) for e, v in recipe.standard_lr)
        changes["fast_lr"] = tuple((e, v * ranks.size) for e, v in recipe.fast_lr)
    return dataclasses.replace(recipe, **changes)


def prepare_run(recipe: Recipe, plan: Plan, train_df, towers: int, batch_per_tower: int, logdir: str,
                resume_ckpt: Optional[str], lock: Optional[RunLock]) -> "RunStart":
    """Rank 0's part of the start, after prepare_logdir(): check --load, create the log directory, find where
    to resume. The lock stays held (rundir.release_locks() at the end of train())."""
    load_ckpt = None
    if recipe.load:
        load_ckpt = resolve_checkpoint(recipe.load) if os.path.exists(recipe.load) or os.path.exists(
            recipe.load + ".index") else None
        if load_ckpt is None:
            raise UserError("--load %s: no checkpoint there; pass a model-N prefix, its .index file or a log "
                            "directory" % recipe.load)
        check_checkpoint_matches(plan, load_ckpt, skip=WeightsInit.NOT_WEIGHTS)
    if resume_ckpt:
        steps_per_epoch = read_settings(logdir)["steps_per_epoch"]
        step = checkpoint_global_step(resume_ckpt)
        if step % steps_per_epoch:
            raise UserError("checkpoint %s is at step %d, not at the end of an epoch of %d steps (run.json): it is "
                            "not this run's; restore the run's own files, or start a new run from it with --load"
                            % (resume_ckpt, step, steps_per_epoch))
        starting_epoch = step // steps_per_epoch + 1
        check_records_cover(recipe, logdir, starting_epoch)
    else:
        steps_per_epoch = recipe.steps_per_epoch or len(train_df)
        starting_epoch = 1
    if starting_epoch > recipe.max_epoch:
        raise UserError("the run in %s already finished epoch %d of --max-epoch %d; raise --max-epoch to train on"
                        % (logdir, starting_epoch - 1, recipe.max_epoch))
    if resume_ckpt:
        trim_for_resume(logdir, starting_epoch)
    else:
        lock = create_logdir(logdir, lock)
        plan.save(os.path.join(logdir, PLAN_FILE))
        write_settings(logdir, {"recipe": dataclasses.asdict(recipe), "steps_per_epoch": steps_per_epoch,
                                "towers": towers, "batch_per_tower": batch_per_tower})
    records = [r for r in read_records(logdir) if r["epoch"] < starting_epoch]
    if load_ckpt:  # read later, at the session's start: a run still training could rotate it away by then
        load_ckpt = snapshot_checkpoint(load_ckpt, os.path.join(logdir, LOADING_DIR),
                                        newest=(lambda: resolve_checkpoint(recipe.load)) if os.path.isdir(recipe.load)
                                        else None)
    return RunStart(logdir, resume_ckpt, load_ckpt, steps_per_epoch, starting_epoch, records)


@dataclasses.dataclass
class RankSetup:
    """What this process trains: its recipe (a Horovod rank's share of it), plan, data and model."""
    recipe: Recipe
    plan: Plan
    towers: int
    train_df: object
    val_df: object
    model: EpsResNet


def train(recipe: Recipe, data: Optional[tuple] = None, extra_callbacks: Sequence = ()) -> dict:
    """Train as the recipe says; returns a summary dict (logdir, epochs, last validation error, discards).

    `data`: (train dataflow, validation dataflow or None, mean image or None) to train on instead of the
    recipe's dataset; `extra_callbacks`: more tensorpack callbacks, run after ours.
    Under Horovod every rank calls this; rank 0 alone writes the log directory.
    """
    recipe = recipe.validate()
    ranks = join_ranks(recipe)
    run = None
    try:
        setup, run = set_up(recipe, ranks, data)
        is_chief = ranks is None or ranks.is_chief
        if is_chief:
            logger.set_logger_dir(run.logdir, action="k")
        logger.info("plan: %d blocks, depth %d, %.2f M parameters; %s x batch %d; %d steps per epoch; epochs %d..%d"
                    % (len(setup.plan.blocks), setup.plan.full_depth, setup.plan.num_params / 1e6,
                       "%d Horovod processes" % ranks.size if ranks else "%d tower(s)" % setup.towers,
                       setup.recipe.batch, run.steps_per_epoch, run.starting_epoch, setup.recipe.max_epoch))
        callbacks, monitors = build_callbacks(setup, run, ranks, extra_callbacks)
        config = TrainConfig(model=setup.model, data=QueueInput(setup.train_df), callbacks=callbacks,
                             monitors=monitors, steps_per_epoch=run.steps_per_epoch, max_epoch=setup.recipe.max_epoch,
                             starting_epoch=run.starting_epoch, session_init=session_init(run, is_chief),
                             session_creator=session_creator(setup.recipe, ranks, setup.plan))
        trainer = choose_trainer(setup, ranks)
        if setup.recipe.seed is not None:  # dataflow and augmentation RNGs (the graph seed is set by the model)
            fix_rng_seed(setup.recipe.seed + (ranks.rank if ranks else 0))
        # tensorpack logs a failed run with a malformed logging call; Python would print a "--- Logging error ---"
        # block before our one-line message (a UserError raised by a callback, e.g. the NaN guard).
        logging.raiseExceptions = False
        launch_train_with_config(config, trainer)
        return summarize_run(run.logdir) if is_chief else {"logdir": run.logdir, "rank": ranks.rank}
    finally:
        if run is not None and run.load_ckpt and os.path.dirname(run.load_ckpt).endswith(LOADING_DIR):
            shutil.rmtree(os.path.dirname(run.load_ckpt), ignore_errors=True)
        release_locks()  # the log directory's lock (rank 0), however training ended


def set_up(recipe: Recipe, ranks: Optional[Ranks], data: Optional[tuple]) -> Tuple[RankSetup, "RunStart"]:
    """(this rank's RankSetup, rank 0's RunStart). Every rank loads its data and builds its model; rank 0 also
    checks and locks the log directory and decides where training starts. Under Horovod a UserError on any
    rank stops every rank, and rank 0's RunStart is handed to all of them."""
    if ranks is None:
        return set_up_rank(recipe, None, data)
    return ranks.agree(lambda: set_up_rank(recipe, ranks, data))


def set_up_rank(recipe: Recipe, ranks: Optional[Ranks], data: Optional[tuple]) -> Tuple[RankSetup, Optional["RunStart"]]:
    """This rank's part of set_up(): (RankSetup, RunStart on rank 0 or None)."""
    is_chief = ranks is None or ranks.is_chief
    recipe = per_rank_recipe(recipe, ranks) if ranks else recipe
    towers = 1 if ranks else max(1, len(recipe.gpus))
    # NCHW only where a GPU runs the towers (CPU kernels of some builds support NHWC only: AvgPool on AMD CPUs);
    # without --gpu the command line hid the GPUs (cli.recipe_from_args)
    on_gpu = bool(visible_gpus())
    plan = build_plan(recipe)
    if is_chief:  # a wrong log directory fails before the data is loaded
        logdir, resume_ckpt, lock = prepare_logdir(recipe, plan)
    batch_per_tower = recipe.batch_per_tower
    train_df, val_df, mean = data or build_data(recipe, plan, batch_per_tower, write_cache=is_chief)
    model = EpsResNet(plan, recipe, on_gpu, mean_image=mean,
                      channel_stats=imagenet_normalisation(recipe.imagenet_aug))
    setup = RankSetup(recipe, plan, towers, train_df, val_df, model)
    if not is_chief:
        return setup, None
    return setup, prepare_run(recipe, plan, train_df, towers, batch_per_tower, logdir, resume_ckpt, lock)


def build_callbacks(setup: RankSetup, run: "RunStart", ranks: Optional[Ranks], extra_callbacks: Sequence = ()) -> tuple:
    """(callbacks, monitors) in the order they must run at each epoch's end: the methods' agreement (which blocks
    the reduced network of validation removes), validation, the methods' schedules (ε) and then the learning
    rate and weight decay, the epoch's record (discards.jsonl, then the monitors' stats.json and events), and the
    checkpoint last of all (the epoch's commit, see rundir)."""
    recipe, plan, model = setup.recipe, setup.plan, setup.model
    is_chief = ranks is None or ranks.is_chief
    parts = [m.training_callbacks(recipe, plan, run.logdir, ranks) for m in model.methods]
    gates = next((p.gates for p in parts if p.gates is not None), None)
    callbacks = [c for p in parts for c in p.agree]
    if is_chief and setup.val_df is not None:
        callbacks.append(validation_runner(setup))
    callbacks += [c for p in parts for c in p.schedule]
    policy = LearningRatePolicy.from_records(
        run.records, standard=recipe.standard_lr, fast=recipe.fast_lr, adaptive=recipe.adaptive_lr and gates is not None,
        k=recipe.adaptive_k, threshold=recipe.adaptive_threshold)
    lr_setter = LearningRateSetter(policy, gates)
    callbacks += [lr_setter, PolicySetter("weight_decay", WeightDecayPolicy(recipe.weight_decay,
                                                                            recipe.weight_decay_every,
                                                                            run.steps_per_epoch))]
    if ranks:
        callbacks.append(RankEpochLog(ranks, gates, lr_setter))
    if is_chief:
        callbacks.append(EpochRecorder(plan, run.logdir, gates, lr_setter, methods=model.methods))
    callbacks += [NaNGuard(), InputWatchdog(), EstimatedTimeLeft()] + list(extra_callbacks)
    # monitors run after every callback; the console leaves out per-block scalars (1,125 lines an epoch at n=125),
    # which stay in TensorBoard, stats.json and discards.jsonl
    per_block = r"^(%s)/" % "|".join(Plan.PER_BLOCK_SCALARS)
    monitors = [TFEventWriter(), StrictJSONWriter(), ScalarPrinter(blacklist=[per_block])]
    if is_chief:
        monitors.append(EpochCheckpoint(run.logdir, recipe.max_to_keep))
    return callbacks, monitors


def validation_runner(setup: RankSetup):
    """Validation of the trained network and, for a gated one, of the network an export would keep on the same
    batches (EpsResNet.validation_tower_func); one inference tower per GPU."""
    recipe, model = setup.recipe, setup.model
    infs = [ScalarStats("cross_entropy_loss"), ClassificationError("incorrect_vector", "val_error")]
    if model.side:
        infs.append(ClassificationError("side_incorrect_vector", "val_side_error"))
    if recipe.style == "imagenet":
        infs.append(ClassificationError("incorrect_top5", "val_error_top5"))
    if model.gated:
        infs.append(ClassificationError("reduced/incorrect_vector", "val_error_reduced"))
        if recipe.style == "imagenet":
            infs.append(ClassificationError("reduced/incorrect_top5", "val_error_top5_reduced"))
    tower_func = model.validation_tower_func()
    if setup.towers > 1:  # a short last pass may repeat a few images
        return DataParallelInferenceRunner(setup.val_df, infs, list(range(setup.towers)), tower_func=tower_func)
    return TolerantInferenceRunner(setup.val_df, infs, tower_func=tower_func)


def session_init(run: "RunStart", is_chief: bool):
    """Rank 0 restores the checkpoint (the trainer then broadcasts every variable to the other ranks).
    --load takes the weights only: the new run starts at step 0 with its own data set's mean image."""
    if is_chief and run.resume_ckpt:
        return SmartInit(run.resume_ckpt)
    if is_chief and run.load_ckpt:
        return WeightsInit(run.load_ckpt)
    return None


class InitialisingSessionCreator(NewSessionCreator):
    """tensorpack's NewSessionCreator (its default config: soft placement, GPU memory growth), made cheaper for
    deep graphs, running ops on `threads` threads each (intra-op) and `ops_at_once` ops in parallel (inter-op).

    Each graph the session has not seen yet, and each new set of fetches, costs a pass that grows faster than
    the graph: tensorpack adds an op between its two initialiser runs, paying for two; here both initialisers
    are built first and run together (local variables are the monitors' moving averages, from zeros). Its check
    that no initialiser waits on a queue is skipped too: a quadratic walk, and our initialisers read no input.

    Threads are set here, when the session is made: HorovodTrainer rewrites the config before that with the
    machine's whole core count, blind to a process pinned to fewer cores."""

    def __init__(self, threads: int, ops_at_once: int):
        super().__init__()
        self.threads, self.ops_at_once = threads, ops_at_once

    def create_session(self):
        self.config.intra_op_parallelism_threads = self.threads
        self.config.inter_op_parallelism_threads = self.ops_at_once
        initialisers = [tfv1.global_variables_initializer(), tfv1.local_variables_initializer()]
        sess = session(target=self.target, config=self.config)
        sess.run(initialisers)
        return sess


# A CPU thread joins an op's work only for at least this many multiply-accumulates per layer and step: below it
# a second thread per op slowed the demo's steps (README, "Several GPUs and deep networks").
MACS_PER_THREAD = 50e6


def threads_per_op(plan: Plan, batch: int, cores: int, on_gpu: bool) -> int:
    """Threads for one op: every core when a GPU computes (the CPU runs small ops and input copies), else as many
    as the layers' work per step keeps busy. Independent ops still run side by side on all cores (inter-op)."""
    if on_gpu:
        return cores
    per_layer = plan.flops * batch / plan.full_depth
    return max(1, min(cores, int(per_layer // MACS_PER_THREAD)))


def session_creator(recipe: Recipe, ranks: Optional[Ranks] = None,
                    plan: Optional[Plan] = None) -> InitialisingSessionCreator:
    """The training session on the cores this process may use (a Horovod rank: its share of its machine), with
    threads_per_op() threads for each op given the `plan` (all of them without one), XLA auto-clustering if asked.

    tensorpack's default config runs each op on one thread and lets TensorFlow choose how many ops run at once.
    Auto-clustering must be set in this config: tf.config.optimizer.set_jit() does not reach a v1 Session. On a
    CPU it also needs TF_XLA_FLAGS=--tf_xla_cpu_global_jit before TensorFlow loads (cli.recipe_from_args)."""
    cores = ranks.cores if ranks else cores_per_process()
    on_gpu = bool(visible_gpus())
    threads = threads_per_op(plan, recipe.batch_per_tower, cores, on_gpu) if plan else cores
    # the default config, not a "user-provided" one (that prints warnings)
    creator = InitialisingSessionCreator(threads, cores)
    if not on_gpu and not recipe.grappler:
        # Grappler rewrites the whole graph once per new set of fetches at a cost that grows faster than the graph,
        # and on a CPU speeds up only small batches (README, "Benchmarks"): without GPUs, only with --grappler.
        creator.config.graph_options.rewrite_options.disable_meta_optimizer = True
    if recipe.xla:
        creator.config.graph_options.optimizer_options.global_jit_level = tfv1.OptimizerOptions.ON_1
        logger.info("XLA auto-clustering is on for the training session")
    logger.info("training session: %d thread(s) per op, %d ops at once (%d cores for this process%s)"
                % (threads, cores, cores, ", its share of the machine's Horovod ranks" if ranks else ""))
    return creator


def choose_trainer(setup: RankSetup, ranks: Optional[Ranks]):
    if ranks:
        trainer = HorovodTrainer(average=True)
        # The gradient allreduce keeps the weights equal on every rank; a per-epoch broadcast from rank 0 would
        # also hide any rank whose ε or learning rate went astray, and overwrite each rank's BatchNorm statistics.
        trainer.BROADCAST_EVERY_EPOCH = False
        return trainer
    if setup.towers > 1:
        return SyncMultiGPUTrainerReplicated(setup.towers)
    return SimpleTrainer()


def summarize_run(logdir: str) -> dict:
    """Last epoch's validation error and discard record of a run, read from its files."""
    summary = {"logdir": logdir}
    run = Run.open(logdir)
    stats = run.stats()
    if stats:
        summary["epoch"] = stats[-1].get("epoch_num")
        for key in ("val_error_reduced", "val_error_top5_reduced", "val_error", "val_side_error", "val_error_top5"):
            if key in stats[-1]:
                summary[key] = stats[-1][key]
    records = run.records()
    if records and records[-1].get("gated", True):
        last = records[-1]
        summary["discarded"] = discarded_in_record(last)
        summary["gated_blocks"] = len(last["blocks"])
    if records and "channels" in records[-1]:
        summary["channels"] = records[-1]["channels"]
    choice = read_choice(logdir)
    if choice is not None:
        summary["epsilon_chosen"] = choice["epsilon"]
    return summary
