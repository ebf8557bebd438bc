"""Writing files so that a crash never leaves a half-written one (host-side, no array backend)."""
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
