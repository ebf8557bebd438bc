"""Output files: written so that a crash never leaves a half-written one, checked before any long work that
they can be written at all (and that there is room for them), never written over unless asked, and a run
folder written by one process at a time (host-side, no array backend)."""
import datetime
import os
import shutil
import signal
import sys
import tempfile
import threading


def write_atomically(path, write):
    """Call write(file) on a temporary file next to `path`, flush it to disk, then rename it to `path`.

    A crash or an error in the middle leaves the previous file at `path` untouched and no temporary
    file behind (the error is re-raised). Used for checkpoints, metrics.json and the image cache.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:  # interrupted right after the rename: the new file is in place
            pass
        raise


def check_writable(folder, flag="--out"):
    """Make `folder` if needed and check that a file can be written there; OSError with a message (naming
    the command's `flag`) if not.

    Called before any long work, so that a read-only folder, a full disk or an --out that is a file
    stops a run at once instead of after its first epoch."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OSError(f"{folder} is a file, not a folder; choose another {flag}")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OSError(f"cannot write into {folder} ({e.strerror or e}); choose a writable folder with free "
                      f"space for {flag}") from None


def remove_stale_temporaries(folder, names):
    """Delete the temporary files that write_atomically leaves when its process is killed mid-write
    (kill -9, a power cut): <name>.<random>.tmp next to each file of `names` it was writing. Call it when
    a run starts in `folder`, which no other process writes to then."""
    if not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        if (entry.is_file(follow_symlinks=False) and entry.name.endswith(".tmp")
                and any(entry.name.startswith(name + ".") for name in names)):
            try:
                os.unlink(entry.path)
            except OSError:
                pass  # not ours to fix; the next write makes its own temporary file


def _parents(folder):
    """folder, its parent, ..., up to the root."""
    while True:
        yield folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def output_file_problem(path, extensions=None, overwrite=True):
    """Why the command could not write its output file `path`, or None if it can. Makes the folder the
    file goes into (as the write would). extensions: the allowed file endings, if limited. overwrite=False:
    an existing file is a problem too (the command was not given --overwrite).

    Called while parsing the flags, so that a typo in an output path stops the command before it decodes
    a single image, not after all the work."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "is a folder; give the path of a file to write"
    if extensions is not None:
        ending = os.path.splitext(path)[1].lower().lstrip(".")
        if ending and ending not in extensions:
            return f"ends in .{ending}, which cannot be written; use one of .{', .'.join(sorted(extensions))}"
    folder = os.path.dirname(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"cannot be written: {folder} is a file, not a folder"
    if not os.path.exists(folder) and any(os.path.isfile(p) for p in _parents(folder)):
        return f"cannot be written: {next(p for p in _parents(folder) if os.path.isfile(p))} is a file, not a folder"
    if os.path.exists(path) and not overwrite:
        return "already exists; choose another path, or pass --overwrite to replace it"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "exists and is not writable; choose another path or fix its permissions"
    try:
        check_writable(folder, "the output file's folder")  # makes it; a read-only folder or a full disk fails here
    except OSError as e:
        return f"cannot be written: {e}"
    return None


def check_free_space(folder, needed_bytes, what):
    """OSError unless `folder`'s disk has room for `needed_bytes` (twice: a file is written beside the one it
    replaces before the rename)."""
    free = shutil.disk_usage(folder).free
    if free < 2 * needed_bytes:
        raise OSError(f"{folder} has {free / 2**20:.0f} MB free, and {what} needs about "
                      f"{2 * needed_bytes / 2**20:.0f} MB (written beside the old file, then renamed); free "
                      "some space or choose another folder")


class FolderBusy(Exception):
    """Another process holds a run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder, so that one process at a time writes into it:

        with RunLock(out):      # FolderBusy at once if another process holds it
            ... train, write the outputs ...

    The lock is an flock on <folder>/.lock, which also records who holds it (the process id, the time and
    the command) for the message another process gets. The operating system releases an flock when its
    process ends in any way (an exception, Ctrl-C, kill -9), so a crashed run never leaves the folder
    locked. Where flock does not exist (Windows) the lock is a no-op."""

    NAME = ".lock"

    def __init__(self, folder):
        self.folder = folder
        self.file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            return self
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self.NAME)
        self.file = open(path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = " ".join(self.file.read().split()) or "another process"
            self.file.close()
            self.file = None
            raise FolderBusy(f"{self.folder} is being written by another tinymae process ({holder}); wait for "
                             "it to finish, or choose another --out") from None
        self.file.seek(0)
        self.file.truncate()
        started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.file.write(f"pid {os.getpid()}, started {started}: {' '.join(sys.argv)[:200]}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()  # closing the file releases the flock
            self.file = None
        return False


class InterruptBetweenSteps:
    """Ctrl-C in a loop of many short steps (decoding photos, a download) takes effect between two steps:

        with InterruptBetweenSteps() as interrupt:
            for item in items:
                interrupt.check()   # raises KeyboardInterrupt here if Ctrl-C came during the last step
                ...

    Python raises KeyboardInterrupt wherever the main thread happens to be, and where that is inside a
    finaliser (a progress bar's weakref callback, say) it is printed and dropped, and the loop runs on to a
    normal exit. Here the signal only sets a flag, and the loop raises the interrupt itself. Only in the
    main thread (the only one that receives signals); elsewhere it changes nothing."""

    def __enter__(self):
        self.requested = False
        self.previous = None
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
        if self.requested and kind is None:  # Ctrl-C during the last step
            raise KeyboardInterrupt
        return False
