"""Output files: written so that a crash never leaves a half-written one, and checked before any long work
that they can be written at all (host-side, no array backend)."""
import os
import tempfile


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
        os.unlink(tmp_path)
        raise


def check_writable(folder):
    """Make `folder` if needed and check that a file can be written there; OSError with a message if not.

    Called before any long work, so that a read-only folder, a full disk or an --out that is a file
    stops a run at once instead of after its first epoch."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OSError(f"{folder} is a file, not a folder; choose another --out")
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
                      "space") from None


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


def output_file_problem(path, extensions=None):
    """Why the command could not write its output file `path`, or None if it can. Makes the folder the
    file goes into (as the write would). extensions: the allowed file endings, if limited.

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
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "exists and is not writable; choose another path or fix its permissions"
    try:
        check_writable(folder)  # makes the folder; a read-only folder or a full disk fails here
    except OSError as e:
        return f"cannot be written: {e}"
    return None
