"""Small file helpers: every output file is written to a temporary name and renamed into place."""
import errno
import json
import os
import tempfile


def atomic_write_bytes(path, data: bytes):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; these files are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


def append_json_line(path, record: dict):
    """Append one JSON record and fsync it, so a crash loses at most the line being written. A half line left by
    an earlier crash is ended first, so it cannot swallow this record."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        prefix = b""
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                prefix = b"\n"
        f.write(prefix + json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


_WRITE_FAILURES = ("No space left on device", "Read-only file system", "Disk quota exceeded", "File too large")


def is_write_failure(error) -> bool:
    """An OSError or TensorFlow file error that means the disk refused a write (full, read-only, quota)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return True
    return any(text in str(error) for text in _WRITE_FAILURES)


def write_failure_reason(error) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    return next((t for t in _WRITE_FAILURES if t in text), text.strip().splitlines()[0][:200] if text else "")


def disk_error_hint():
    return "free disk space (or fix the permissions), then continue with --resume"
