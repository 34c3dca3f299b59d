"""The one way a command writes its output directory: prune_export, figures, frontier and study.

    out = check_out(args.out, "--out")                  # refuses a file, anything inside or around a training run
    with Staging(out, "figures") as stage:              # a hidden folder beside `out`
        write files into stage.path
    # published: the staged files replace their namesakes in `out` (or the whole export, or one version of it)

Whatever fails (a full or read-only disk, an error, Ctrl-C) removes the staging folder and the parent folders it
created, so nothing is left behind; a disk that refuses a write becomes one UserError. Files are published 0644
and folders 0755 whatever the umask: what we write is meant to be read by other users (TensorFlow Serving, a web
server). Staging left by a process killed with -9 is removed by the next command writing beside it.
"""
import os
import re
import shutil
import tempfile
from typing import List, Optional

from . import UserError
from .fileio import is_write_failure, write_failure_reason
from .rundir import holds_run

FILE_MODE, DIR_MODE = 0o644, 0o755
_STAGING = re.compile(r"^\.(export|figures|frontier|study)-(\d+)-")

# how a staged folder becomes `out`
UPDATE = "update"    # each staged file replaces its namesake in `out`; other files in `out` stay
REPLACE = "replace"  # `out` (an earlier export) is replaced as a whole, after the new one is complete
ADD = "add"          # a staged version folder joins `out`; the staged files beside it replace theirs


def check_out(out: str, flag: str = "--out", own_run: Optional[str] = None, source: Optional[str] = None) -> str:
    """The absolute output path, after refusing what must never be written: an existing file, a training run's
    directory and anything inside one (through symlinks and '..' too). `own_run`: a run whose sub-folders may
    hold this output (a run's own figures), though never the run's directory itself. `source`: the run the output
    is made from, which an output replaced as a whole (an export) must not contain either."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError("%s %s is a file; pass a directory" % (flag, out))
    real = os.path.realpath(out)
    if source:
        real_source = os.path.realpath(source)
        if real == real_source or real.startswith(real_source + os.sep):
            raise UserError("%s %s is inside the log directory %s; nothing is written there: choose a directory "
                            "outside it" % (flag, out, source))
        if real_source.startswith(real + os.sep):
            raise UserError("%s %s contains the log directory %s; writing there could replace the run: choose a "
                            "new directory" % (flag, out, source))
    own = os.path.realpath(own_run) if own_run else None
    folder = real
    while True:
        if holds_run(folder):
            if folder == real:
                raise UserError("%s %s is a training run's directory; choose a directory of its own" % (flag, out))
            if folder != own:
                raise UserError("%s %s is inside the training run %s; choose a directory outside any run"
                                % (flag, out, folder))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return os.path.abspath(out)


class Staging:
    """A hidden folder beside `out` to write into; published on success, removed on any failure.

    `kind`: export, figures, frontier or study (named in messages and in the staging folder's name).
    `mode`: UPDATE (figures, frontier, study), REPLACE (a new export, or --force over an earlier one) or ADD
    (`version`: a new version folder of an earlier export)."""

    def __init__(self, out: str, kind: str, mode: str = UPDATE, version: Optional[str] = None):
        self.out = os.path.realpath(out) if os.path.islink(out) else os.path.abspath(out)  # a symlink stays
        self.kind, self.mode, self.version = kind, mode, version
        self.path = None
        self._created: List[str] = []
        self._unregister = lambda: None

    def __enter__(self) -> "Staging":
        from .guard import on_abort
        parent = os.path.dirname(self.out)
        missing, folder = [], parent
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:
            for folder in reversed(missing):
                os.mkdir(folder)
                self._created.append(folder)
                os.chmod(folder, DIR_MODE)
            remove_stale_staging(parent)
            self.path = tempfile.mkdtemp(prefix=".%s-%d-" % (self.kind, os.getpid()), dir=parent)
        except OSError as e:
            self._clean()
            raise UserError("cannot write the %s to %s (%s); choose a writable --out"
                            % (self.kind, parent, write_failure_reason(e)))
        self._unregister = on_abort(self._clean)
        return self

    def __exit__(self, kind, error, traceback):
        if error is None:
            try:
                make_readable(self.path)
                self._publish()
            except BaseException as e:
                self._fail(e)
                raise
        else:
            self._fail(error)
        self._unregister()
        return False

    def _fail(self, error):
        self._clean()
        self._unregister()
        if isinstance(error, Exception) and is_write_failure(error):
            raise UserError("cannot write the %s %s (%s); nothing was %s: free disk space or choose another --out"
                            % (self.kind, self.out, write_failure_reason(error),
                               "exported" if self.kind == "export" else "written")) from None

    def _publish(self):
        staged, out = self.path, self.out
        if self.mode == ADD:
            if not os.path.isdir(out):
                raise UserError("%s disappeared while the new version was being exported; export again" % out)
            os.rename(os.path.join(staged, self.version), os.path.join(out, self.version))
        elif self.mode == REPLACE or not os.path.exists(out):
            old = None
            if os.path.exists(out):  # an earlier export, set aside until the new one is in place
                old = tempfile.mkdtemp(prefix=".%s-%d-old-" % (self.kind, os.getpid()), dir=os.path.dirname(out))
                os.rename(out, os.path.join(old, "out"))
            os.rename(staged, out)
            if old:
                shutil.rmtree(old, ignore_errors=True)
            return
        for name in os.listdir(staged):
            target = os.path.join(out, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staged, name), target)
        os.rmdir(staged)

    def _clean(self):
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self._created):
            try:
                os.rmdir(folder)
            except OSError:
                break  # something else put files there meanwhile: leave it
        self._created = []


def remove_stale_staging(parent: str):
    """Remove staging folders beside `out` left by processes that no longer run (kill -9)."""
    for name in os.listdir(parent):
        m = _STAGING.match(name)
        if not m:
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except PermissionError:
            continue


def make_readable(folder: str):
    """Files FILE_MODE and folders DIR_MODE, whatever the umask."""
    os.chmod(folder, DIR_MODE)
    for d, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(d, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(d, name), FILE_MODE)
