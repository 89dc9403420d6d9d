"""Writing a user's output file: all or nothing, with the user's permissions.

Every file astrosr writes for the user (FITS images, figures, tables) goes
through `replacing`: it is written under a temporary name in the same folder
and renamed over the target only when complete, so a failed or interrupted
write leaves no partial file; the file gets the mode any new file of the
user's would (the umask: 0644 for most users), not the 0600 of a temporary
file.
"""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["replacing"]


@contextlib.contextmanager
def replacing(path, *, overwrite=False):
    """Yield a temporary path beside ``path`` that becomes ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    overwrite : bool
        Replace an existing file (checked before and again after writing).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    path = Path(path)
    _check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _check_target(path, overwrite)  # it may have appeared while we wrote
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_target(path, overwrite):
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")


def _umask():
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as status:  # Linux 4.7+
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once (os.umask is the only query)
    os.umask(mask)
    return mask
