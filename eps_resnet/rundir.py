"""The training log directory: its file names, its lock, its checkpoints and its per-epoch records.

Training, export and reports ask this module about a run's files instead of knowing them themselves.

An epoch ends as one transaction: the epoch's records (discards.jsonl, stats.json, TensorBoard events) are
written first and its checkpoint last. A checkpoint of epoch E therefore means every record of E is on disk;
`--resume` starts from the newest intact checkpoint and drops whatever a killed run wrote after it.
"""
import errno
import fcntl
import json
import logging
import os
import re
import time
from typing import Callable, List, Optional

from . import UserError
from .fileio import atomic_write_text

PLAN_FILE = "plan.json"            # the network's blocks (eps_resnet.plan.Plan)
RUN_FILE = "run.json"              # the recipe, steps per epoch, towers
DISCARDS_FILE = "discards.jsonl"   # one record per epoch: ε, LR, discarded_cnt, per-block gate statistics
STATS_FILE = "stats.json"          # tensorpack's per-epoch scalars
LOCK_FILE = ".lock"                # held (flock) by the process that trains in the directory
EXPORT_MARKER = ".eps-resnet-export"  # written into every export directory, so --force knows what is ours
ABANDONED_PREFIX = "abandoned-"    # files of a start that stopped before its first checkpoint
LOADING_DIR = ".loading"           # a new run's copy of the --load checkpoint, removed when training ends

# The moving average of is_discarded at which a block counts as discarded, by rule.
DISCARD_RULES = {
    "average": 0.99,  # ours: training's count and log, the reduced network validated each epoch, figures, study
    "released": 1.0,  # the released compressor's: the printed average is exactly 1 (prune_export --criterion ema)
}

_CHECKPOINT_INDEX = re.compile(r"^model-(\d+)\.index$")
log = logging.getLogger(__name__)


def _warn(message):
    from tensorpack.utils import logger
    logger.warn(message)


# ---- what a directory is --------------------------------------------------------------------------------
def holds_run(path) -> bool:
    """True if `path` is a training log directory (it has the run's settings or a checkpoint; an export has a
    plan.json too, so the plan alone does not count)."""
    if not os.path.isdir(path) or is_export(path):
        return False
    names = os.listdir(path)
    return RUN_FILE in names or any(_CHECKPOINT_INDEX.match(n) for n in names)


def is_export(path) -> bool:
    """True if `path` is a directory written by prune_export (marker file, or the layout of older exports)."""
    if not os.path.isdir(path):
        return False
    names = set(os.listdir(path))
    return EXPORT_MARKER in names or {"saved_model.pb", "report.json", PLAN_FILE} <= names


def has_content(path) -> bool:
    """A directory holds something besides our lock file and the files of starts that never reached a checkpoint."""
    return os.path.isdir(path) and any(n not in (LOCK_FILE, LOADING_DIR) and not n.startswith(ABANDONED_PREFIX)
                                       for n in os.listdir(path))


# ---- the lock ---------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a log directory, held as long as the training process lives.

    flock() locks are released by the kernel when the process dies, however it dies; the file keeps the PID
    of the holder so that a second run can name it.
    """

    def __init__(self, logdir):
        self.path = os.path.join(logdir, LOCK_FILE)
        self._fd = None

    def acquire(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError("cannot write the log directory %s (%s); choose a writable --logdir"
                            % (os.path.dirname(self.path), e.strerror))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError("%s is in use by another training process (PID %s); wait for it to end or choose "
                                "another --logdir" % (os.path.dirname(self.path), holder))
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError as e:
            os.close(fd)
            raise UserError("cannot write the log directory %s (%s); free disk space or choose another --logdir"
                            % (os.path.dirname(self.path), e.strerror))
        self._fd = fd
        _HELD_LOCKS.append(self)
        return self

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self in _HELD_LOCKS:
            _HELD_LOCKS.remove(self)


_HELD_LOCKS: List[RunLock] = []


def release_locks():
    """Release every log-directory lock this process holds (the end of train(), however it ended)."""
    for lock in list(_HELD_LOCKS):
        lock.release()


# ---- settings -----------------------------------------------------------------------------------------------
def read_settings(logdir) -> dict:
    """run.json: {"recipe": {...}, "steps_per_epoch": N, ...}; a damaged file is one clear error."""
    path = os.path.join(logdir, RUN_FILE)
    if not os.path.isfile(path):
        raise UserError("%s has no %s; is it the log directory of a training run?" % (logdir, RUN_FILE))
    try:
        with open(path) as f:
            settings = json.load(f)
        if not isinstance(settings.get("recipe"), dict) or int(settings["steps_per_epoch"]) < 1:
            raise ValueError("recipe or steps_per_epoch missing")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise UserError("%s is damaged (%s); it holds the run's settings: restore it, or start a new run from the "
                        "run's weights with --load %s" % (path, e, logdir))
    return settings


def write_settings(logdir, settings: dict):
    atomic_write_text(os.path.join(logdir, RUN_FILE), json.dumps(settings, indent=1))


# ---- checkpoints --------------------------------------------------------------------------------------------
def checkpoint_steps(logdir) -> List[int]:
    """Global steps of the `model-N` checkpoints in `logdir`, oldest first (read from the files themselves,
    not from TensorFlow's `checkpoint` index file, which a crash can leave empty or stale)."""
    if not os.path.isdir(logdir):
        return []
    steps = [int(m.group(1)) for m in map(_CHECKPOINT_INDEX.match, os.listdir(logdir)) if m]
    return sorted(steps)


def checkpoint_problem(prefix) -> Optional[str]:
    """Why the checkpoint `prefix` cannot be restored (every tensor is read, so checksums are verified), or None."""
    from .tfcompat import tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # DataLossError, NotFoundError, OutOfRangeError, ...: all mean "not usable"
        text = str(e).strip().splitlines()
        return text[0][:200] if text else type(e).__name__
    return None


def newest_intact_checkpoint(logdir, warn: Callable[[str], None] = _warn) -> Optional[str]:
    """The newest checkpoint of `logdir` that reads back completely; damaged newer ones are named and skipped.
    Raises UserError if there are checkpoints but none is intact; None if there are none."""
    damaged = []
    for step in reversed(checkpoint_steps(logdir)):
        prefix = os.path.join(logdir, "model-%d" % step)
        problem = checkpoint_problem(prefix)
        if problem is None:
            if damaged:
                warn("skipped damaged checkpoint(s) %s; using %s" % (", ".join(damaged), os.path.basename(prefix)))
            return prefix
        damaged.append("model-%d (%s)" % (step, problem))
    if damaged:
        raise UserError("no intact checkpoint in %s: %s; restore the files or start a new run" % (logdir, "; ".join(damaged)))
    return None


def resolve_checkpoint(path, warn: Callable[[str], None] = _warn) -> Optional[str]:
    """A checkpoint prefix for a log directory (its newest intact checkpoint), a `model-N` prefix or one of its
    files; None if there is none. A named checkpoint that is damaged is an error, never silently replaced."""
    if os.path.isdir(path):
        return newest_intact_checkpoint(path, warn)
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if ".data-" in path:
        path = path.split(".data-")[0]
    if not os.path.isfile(path + ".index"):
        return None
    problem = checkpoint_problem(path)
    if problem:
        raise UserError("checkpoint %s is damaged (%s); pass another checkpoint or the log directory (its newest "
                        "intact checkpoint is used)" % (path, problem))
    return path


def checkpoint_files(prefix) -> List[str]:
    folder, base = os.path.split(prefix)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder or ".")
                  if n == base + ".index" or n.startswith(base + ".data-"))


def snapshot_checkpoint(prefix: str, folder: str, newest: Optional[Callable[[], Optional[str]]] = None) -> str:
    """Hard-link (or copy) the checkpoint `prefix` into `folder` (created) and return the copy's prefix, so a
    training run still writing its directory may delete the checkpoint while we read it. If the files vanish
    meanwhile: with `newest` (the caller asked for no checkpoint in particular), that checkpoint is taken once
    instead; otherwise a UserError."""
    import shutil
    os.makedirs(folder, exist_ok=True)
    for attempt in range(2):
        try:
            for path in checkpoint_files(prefix):
                target = os.path.join(folder, os.path.basename(path))
                try:
                    os.link(path, target)
                except FileNotFoundError:
                    raise
                except OSError:
                    shutil.copy2(path, target)  # another file system
            copy = os.path.join(folder, os.path.basename(prefix))
            if not os.path.isfile(copy + ".index"):
                raise FileNotFoundError(prefix + ".index")
            return copy
        except FileNotFoundError:
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
            if attempt or newest is None:
                raise UserError("checkpoint %s was deleted while it was being read (a training run is still writing "
                                "its directory); try again, or name a checkpoint that run keeps" % prefix)
            prefix = newest()
            if prefix is None:
                raise UserError("the checkpoints of %s were deleted while being read" % os.path.dirname(folder))


def remove_checkpoint(prefix):
    """Remove the checkpoint `prefix`, or what a failed save of it left (its files and TensorFlow's temporary
    folder). The index goes first: without it the rest no longer counts as a checkpoint, should this stop half-way."""
    import shutil
    folder, base = os.path.split(prefix)
    for name in sorted(os.listdir(folder), key=lambda n: n != base + ".index"):
        if name == base + ".index" or name.startswith((base + ".data-", base + "_temp")):
            path = os.path.join(folder, name)
            try:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            except OSError:
                pass


# ---- per-epoch records ----------------------------------------------------------------------------------------
def read_records(logdir, warn: Callable[[str], None] = _warn, strict: bool = True) -> list:
    """The records of discards.jsonl. A half-written last line (a crash or a full disk while writing) is dropped
    with a warning; any other line that is not a record means the file is damaged: one clear error, or with
    `strict=False` (readers that only draw) a warning and the line skipped."""
    path = os.path.join(logdir, DISCARDS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = record_problem(record)
            if problem:
                raise ValueError(problem)
        except ValueError as e:
            if n == len(lines) and not complete:
                warn("dropped the half-written last line of %s (the run stopped while writing it)" % path)
                continue
            if not strict:
                warn("skipped line %d of %s: not an epoch record (%s)" % (n, path, e))
                continue
            raise UserError("%s line %d is not an epoch record (%s): the file is damaged; restore it, or delete that "
                            "line and the ones after it and resume" % (path, n, e))
        records.append(record)
    return records


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record) -> Optional[str]:
    """What makes `record` not an epoch record of discards.jsonl (epoch_record.EpochRecorder writes them), or None."""
    if not isinstance(record, dict):
        return "not an object"
    if not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool) or record["epoch"] < 1:
        return "no epoch number"
    for key in ("global_step", "epsilon", "learning_rate", "discarded_cnt"):
        if key in record and not _number(record[key]):
            return "%s is %r" % (key, record[key])
    blocks = record.get("blocks")
    if not isinstance(blocks, dict):
        return "blocks is %s, not a map of block names" % type(blocks).__name__
    for name, block in blocks.items():
        if not isinstance(block, dict):
            return "block %s is not a block record" % name
        if record.get("gated", True) and not all(_number(block.get(k)) for k in ("is_discarded", "response_max")):
            return "block %s is not a gate record" % name
        kernels = block.get("kernels")
        if not isinstance(kernels, dict) or not all(_number(kernels.get(k)) for k in ("norm", "abs_max")) or not (
                isinstance(kernels.get("percentiles"), list) and all(map(_number, kernels["percentiles"]))):
            return "block %s has malformed kernel statistics" % name
    return None


def counts_as_discarded(average: Optional[float], rule: str = "average") -> bool:
    """Whether a block whose moving average of is_discarded is `average` counts as discarded under `rule`."""
    return average is not None and average >= DISCARD_RULES[rule]


def discarded_in_record(record: Optional[dict], rule: str = "average", names=None) -> List[str]:
    """The blocks (among `names`, if given) that `record` counts as discarded under `rule`, sorted; none for a
    plain run's record."""
    if not record or not record.get("gated", True):
        return []
    return sorted(n for n, b in record["blocks"].items()
                  if (names is None or n in names) and counts_as_discarded(b.get("is_discarded"), rule))


def last_record_per_epoch(records) -> list:
    """One record per epoch (the last written wins), in epoch order."""
    by_epoch = {r["epoch"]: r for r in records}
    return [by_epoch[e] for e in sorted(by_epoch)]


def record_of_epoch(records, epoch) -> Optional[dict]:
    found = [r for r in records if r["epoch"] == epoch]
    return found[-1] if found else None


def read_stats(logdir) -> list:
    """stats.json (tensorpack's per-epoch scalars); [] if missing or unreadable (it only feeds figures)."""
    path = os.path.join(logdir, STATS_FILE)
    try:
        with open(path) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(stats, list):
        return []
    # scalars only: an entry or value of another shape would break the figures and the study
    return [{k: v for k, v in s.items() if _number(v)} for s in stats if isinstance(s, dict)]


def trim_for_resume(logdir, starting_epoch, warn: Callable[[str], None] = _warn):
    """Make the records agree with the checkpoint a run resumes from: keep epochs before `starting_epoch` only.

    A run killed after writing epoch E's records but before its checkpoint leaves records of E; they are
    dropped here (and written again when E is trained again). A half-written last line is dropped too.
    """
    path = os.path.join(logdir, DISCARDS_FILE)
    if os.path.exists(path):
        records = read_records(logdir, warn)
        keep = [r for r in records if r["epoch"] < starting_epoch]
        with open(path, "rb") as f:
            tidy = f.read() == b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)
        if len(keep) != len(records) or not tidy:
            dropped = sorted({r["epoch"] for r in records if r["epoch"] >= starting_epoch})
            if dropped:
                warn("dropped the records of epoch(s) %s from %s: they were written after the last intact "
                     "checkpoint and will be written again" % (", ".join(map(str, dropped)), DISCARDS_FILE))
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    stats_path = os.path.join(logdir, STATS_FILE)
    if os.path.exists(stats_path):
        try:
            with open(stats_path) as f:
                stats = json.load(f)
            if not isinstance(stats, list):
                raise ValueError("not a list")
        except ValueError as e:
            aside = stats_path + ".damaged-%s" % time.strftime("%Y%m%d-%H%M%S")
            os.replace(stats_path, aside)
            warn("%s was damaged (%s); moved it to %s and started a new one" % (stats_path, e, aside))
            return
        keep = [s for s in stats if isinstance(s, dict) and s.get("epoch_num", 0) < starting_epoch]
        if len(keep) != len(stats):
            atomic_write_text(stats_path, json.dumps(keep))


def set_aside_unfinished_start(logdir) -> str:
    """Move the files of a run that stopped before its first checkpoint into `abandoned-<time>/` (nothing is
    deleted), so the run can start afresh in its directory. Returns that folder."""
    aside = os.path.join(logdir, ABANDONED_PREFIX + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(aside)
    for name in os.listdir(logdir):
        if name == LOCK_FILE or name.startswith(ABANDONED_PREFIX):
            continue
        os.replace(os.path.join(logdir, name), os.path.join(aside, name))
    return aside


# ---- the one reader of a run ----------------------------------------------------------------------------------
class Run:
    """A training run's log directory as its readers see it (export, study, figures, training's summary): the plan,
    the settings, the per-epoch records and scalars, the checkpoints and the epoch each ends, and which blocks a
    record counts as discarded."""

    def __init__(self, logdir: str, plan):
        self.logdir, self.plan = logdir, plan
        self._settings = None

    @classmethod
    def open(cls, logdir: str) -> "Run":
        from .plan import Plan
        if not os.path.isdir(logdir):
            raise UserError("log directory %s does not exist; pass the --logdir of a training run" % logdir)
        path = os.path.join(logdir, PLAN_FILE)
        if not os.path.isfile(path):
            raise UserError("%s holds no training run (no %s); pass the log directory of one" % (logdir, PLAN_FILE))
        return cls(logdir, Plan.load(path))

    @property
    def settings(self) -> dict:
        """run.json, read when first asked for (drawing figures needs only the plan and the records)."""
        if self._settings is None:
            self._settings = read_settings(self.logdir)
        return self._settings

    @property
    def recipe(self) -> dict:
        return self.settings["recipe"]

    @property
    def steps_per_epoch(self) -> int:
        return int(self.settings["steps_per_epoch"])

    @property
    def gated(self) -> bool:
        return self.recipe.get("epsilon") is not None

    @property
    def epsilon(self):
        """The ε the gates trained with: the recipe's, or the one chosen at the warm-up's end (-e auto; None
        while it is still to be chosen); None for a plain run."""
        if self.recipe.get("epsilon_tolerance") is None:
            return self.recipe.get("epsilon")
        from .auto_epsilon import read_choice
        choice = read_choice(self.logdir)
        return None if choice is None else choice["epsilon"]

    def records(self, strict: bool = True) -> list:
        """discards.jsonl (read_records); `strict=False` for readers that only draw or summarise."""
        return read_records(self.logdir, warn=_warn if strict else (lambda m: None), strict=strict)

    def stats(self) -> list:
        return read_stats(self.logdir)

    def checkpoint(self, which=None) -> Optional[str]:
        """The newest intact checkpoint, or the one `which` names (a step number or a path); None if absent."""
        if which is None:
            return resolve_checkpoint(self.logdir)
        if str(which).isdigit():
            return resolve_checkpoint(os.path.join(self.logdir, "model-%s" % which))
        return resolve_checkpoint(which)

    def epoch_of(self, checkpoint: str) -> int:
        """The epoch `checkpoint` ends."""
        import tensorflow as tf
        return int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step")) // self.steps_per_epoch

    def discarded(self, record: Optional[dict], rule: str = "average") -> List[str]:
        """The plan's blocks `record` counts as discarded under `rule` (rundir.DISCARD_RULES)."""
        return discarded_in_record(record, rule, names=set(self.plan.block_names))
