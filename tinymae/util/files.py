"""Output files: written whole or not at all, checked before any long work as the exact file that will be
written, never one of the command's inputs, and a run folder written by one process at a time (host-side)."""
import errno
import os
import shutil
import signal
import tempfile
import threading

from ..errors import TinymaeError

TEMPORARY = (".tinymae-", ".tmp")  # prefix and suffix of write_atomically's temporary files


def write_atomically(path, write):
    """write(file) into a temporary file beside `path`, flushed to disk, then renamed to `path`: a crash or an
    error leaves the previous file untouched and no temporary behind (the error is re-raised). The temporary's
    name is short, so any name the folder takes can be written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY[0], suffix=TEMPORARY[1])
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder, older_than_s=0.0):
    """Delete the temporaries write_atomically leaves when its process is killed mid-write (kill -9). Call it where
    no other process writes (a locked run folder), or with an age for a shared one (the photo cache)."""
    import time
    for entry in os.scandir(folder) if os.path.isdir(folder) else ():
        if entry.name.startswith(TEMPORARY[0]) and entry.name.endswith(TEMPORARY[1]):
            try:
                if time.time() - entry.stat().st_mtime >= older_than_s:
                    os.unlink(entry.path)
            except OSError:
                pass  # not ours to fix: the next write makes its own temporary


def check_writable(folder, what="--out"):
    """Make `folder` and write a test file there; TinymaeError naming `what` if it cannot be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise TinymaeError(f"{what}: cannot write into {folder} ({e.strerror or e}); choose a writable folder with "
                           "free space") from None


def output_file(flag, path, overwrite, inputs=(), default_ending=None, endings=None):
    """The exact file a command will write for `flag` (with default_ending added when the name has none, as
    matplotlib does), checked now: not a folder, not one of the command's input files, not an existing file
    unless overwrite, an ending it can be written in, a name the folder takes, a folder that can be written."""
    if path is None:
        return None
    path = os.path.abspath(path)
    if default_ending and not os.path.splitext(path)[1] and not os.path.isdir(path):
        path += default_ending
    folder, name = os.path.split(path)
    ending = os.path.splitext(name)[1][1:].lower()
    problem = ("is a folder; give the path of a file" if os.path.isdir(path) else
               "is one of this command's inputs; choose another path" if any(
                   os.path.exists(i) and os.path.exists(path) and os.path.samefile(i, path) for i in inputs) else
               f"ends in .{ending}, which cannot be written; use .{', .'.join(sorted(endings))}"
               if endings and ending not in endings else
               "already exists; choose another path, or pass --overwrite to replace it"
               if os.path.exists(path) and not overwrite else None)
    if problem is None and len(name.encode()) > _name_max(folder):
        problem = f"has a name longer than the {_name_max(folder)} bytes the folder takes"
    if problem:
        raise TinymaeError(f"{flag} {path} {problem}")
    check_writable(folder, flag)
    return path


def _name_max(folder):
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_free_space(folder, needed_bytes, what):
    """TinymaeError unless `folder`'s disk has room for a new file of `needed_bytes` (written beside the file it
    replaces, which frees its own space only after the rename)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise TinymaeError(f"{folder} has {free / 2**20:.1f} MB free, and {what} needs about "
                           f"{needed_bytes / 2**20:.1f} MB; free some space or choose another folder")


class RunLock:
    """One process at a time writes a run folder:

        with RunLock(out):   # TinymaeError at once if another process holds it
            ...

    The lock is an flock on <folder>/.lock, which names its holder for the message another process gets. The
    system releases an flock however its process ends (Ctrl-C, kill -9); a clean exit also removes the file."""

    NAME = ".lock"

    def __init__(self, folder):
        self.folder, self.file = folder, None
        self.path = os.path.join(folder, self.NAME)

    def __enter__(self):
        import fcntl
        os.makedirs(self.folder, exist_ok=True)
        while True:
            self.file = open(self.path, "a+")
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                self.file.seek(0)
                holder = " ".join(self.file.read().split()) or "another process"
                self.file.close()
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise TinymaeError(f"the file system of {self.folder} does not support file locks (flock: "
                                       f"{e.strerror}), which tinymae needs to keep one writer per folder; choose a "
                                       "folder on another file system") from None
                raise TinymaeError(f"{self.folder} is being written by another tinymae process ({holder}); wait for "
                                   "it to finish, or choose another folder") from None
            # A process that ended cleanly just now removed the file we opened: lock the new one instead.
            if os.path.exists(self.path) and os.path.samestat(os.fstat(self.file.fileno()), os.stat(self.path)):
                break
            self.file.close()
        import sys
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        os.unlink(self.path)  # first, while locked: whoever opens the path next makes a new file
        self.file.close()  # closing releases the flock
        return False


class InterruptBetweenSteps:
    """Ctrl-C in a loop of many short steps (decoding photos) takes effect between two steps:

        with InterruptBetweenSteps() as interrupt:
            for item in items:
                interrupt.check()   # KeyboardInterrupt here if Ctrl-C came during the last step

    Python raises KeyboardInterrupt wherever the main thread is, and inside a finaliser (a progress bar's) it is
    printed and dropped; here the signal only sets a flag. In the main thread only (the one signals reach)."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame):
        self.requested = True

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, kind, value, traceback):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.requested and kind is None:
            raise KeyboardInterrupt
        return False
