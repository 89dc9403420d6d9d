"""Writing a user's output file: all or nothing, with the user's permissions.

Every file astrosr writes for the user (FITS images, figures, tables) goes
through `replacing`, so a failed or interrupted write leaves no partial file
and the file gets the mode any new file of the user's would (the umask: 0644
for most users), not the 0600 of a temporary file.

On Linux the data are written into an unnamed file in the target's folder
(``O_TMPFILE``), which gets its name only when complete: a process killed
while writing, even by SIGKILL or the out-of-memory killer, leaves nothing in
the folder (the kernel frees the unnamed file). Writers are handed a path
named like the target: a symbolic link to the unnamed file, in a private
folder of the system's temporary directory (``astrosr-write-*``), removed at
the end; a SIGKILL leaves that folder and its dangling link, no data, and
nothing beside the target. (Replacing an existing file links the finished
file under a hidden name and renames it over the target: a kill between
those two calls, microseconds apart, would leave that complete hidden file.)

Elsewhere, or on file systems without ``O_TMPFILE`` (NFS, some FUSE mounts),
or without ``/proc``, a hidden temporary file ``.<stem>.XXXXXXXX<suffix>``
beside the target is renamed over it; an exception, Ctrl-C or SIGTERM under
`sigterm_exits` remove it, but a SIGKILL leaves it behind.

`sigterm_exits` turns SIGTERM (what ``kill``, batch schedulers and container
managers send first) into an exception, so that cleanup code runs.
"""

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

__all__ = ["replacing", "sigterm_exits", "Terminated"]


@contextlib.contextmanager
def replacing(path, *, overwrite=False):
    """Yield a temporary path that becomes ``path`` when the block succeeds.

    The path yielded has the file name of ``path`` (suffix included, so that
    writers choosing a format or compression by the name, such as astropy
    for ``.fits.gz``, do as they would for ``path``). Write the file there,
    by name (``writeto(tmp)``, ``savefig(tmp)``, ``open(tmp, "wb")``), and
    close it before the block ends. On Linux it is a symbolic link, in a
    private folder of the system's temporary directory, to an unnamed file
    in the folder of ``path``; writers that replace it rather than write
    through it (astropy's FITS table writer) still work, their file copied
    into place at the end. An exception in the block (KeyboardInterrupt
    too) leaves ``path`` as it was, and no temporary file.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    overwrite : bool
        Replace an existing file (checked before and again after writing;
        without ``overwrite``, a file that appears meanwhile is kept, never
        replaced).

    Yields
    ------
    `~pathlib.Path`
        Where to write.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    """
    path = Path(path)
    _check_target(path, overwrite)
    unnamed = _unnamed_file(path)
    if unnamed is None:
        with _named_temporary(path, overwrite) as tmp:
            yield tmp
        return
    fd, folder, tmp = unnamed
    try:
        yield tmp
        if not tmp.is_symlink() and tmp.is_file():  # the writer replaced the link by a file
            with open(tmp, "rb") as written, open(f"/proc/self/fd/{fd}", "wb") as unnamed_file:
                shutil.copyfileobj(written, unnamed_file, 1 << 24)
        elif not tmp.is_symlink():
            raise FileNotFoundError(f"nothing was written for {path}: write the file at the path "
                                    "that replacing() yields")
        os.fchmod(fd, 0o666 & ~_umask())
        _link_in(fd, folder, path, overwrite)
    finally:
        os.close(fd)
        os.close(folder)
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _unnamed_file(path):
    """An unnamed file in the folder of ``path``, and a link named as ``path`` to write it by.

    Returns ``(fd, folder_fd, link)``, or None where that cannot be had (no
    ``O_TMPFILE`` on this system or file system, no ``/proc``, no writable
    temporary directory for the link).
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    opened, link_dir = [], None
    try:
        opened.append(os.open(path.parent, flag | os.O_RDWR | os.O_CLOEXEC, 0o600))
        opened.append(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        target = f"/proc/{os.getpid()}/fd/{opened[0]}"
        if not os.path.exists(target):  # no /proc: the file could not be named
            raise OSError(f"{target} does not exist")
        link_dir = Path(tempfile.mkdtemp(prefix="astrosr-write-"))
        link = link_dir / path.name
        os.symlink(target, link)
    except OSError:  # EOPNOTSUPP, EISDIR (old kernels), EINVAL...: no O_TMPFILE here
        for fd in opened:
            os.close(fd)
        if link_dir is not None:
            shutil.rmtree(link_dir, ignore_errors=True)
        return None
    return opened[0], opened[1], link


def _link_in(fd, folder, path, overwrite):
    """Give the unnamed file ``fd`` the name ``path`` (in the folder open as ``folder``)."""
    source = f"/proc/self/fd/{fd}"

    def link(name):
        os.link(source, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)

    try:
        link(path.name)  # never replaces: without overwrite, a file that appeared is kept
        return
    except FileExistsError:
        if not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True to replace it") from None
    except OSError:  # a file system that refuses the link: copy it in by name instead
        with open(source, "rb") as data, _named_temporary(path, overwrite) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(data, out, 1 << 24)
        return
    # link() cannot replace a name: link under a fresh hidden name, then rename over.
    name = f".{path.name}.{os.urandom(6).hex()}"
    link(name)
    try:
        _check_target(path, overwrite)
        os.replace(name, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
        raise


@contextlib.contextmanager
def _named_temporary(path, overwrite):
    """The portable way: a hidden temporary file beside ``path``, renamed over it at the end."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _check_target(path, overwrite)  # it may have appeared while we wrote
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _check_target(path, overwrite):
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the name of a file to write")
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


class Terminated(SystemExit):
    """SIGTERM received inside `sigterm_exits`: a `SystemExit` with status ``128 + 15``.

    Being a `SystemExit`, it runs ``finally`` blocks and context managers'
    exits on its way out (so `replacing` removes what it wrote), passes
    ``except Exception`` handlers by, and ends the program with status 143,
    as a shell reports a process ended by SIGTERM.

    Parameters
    ----------
    signum : int
        The signal received.
    """

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self):
        return f"terminated by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def sigterm_exits():
    """Within the block, SIGTERM raises `Terminated` in the main thread instead of killing.

    Python's default for SIGTERM ends the process at once, running no
    ``finally`` block: a temporary file outside ``O_TMPFILE``, a half-made
    checkpoint or a child process would be left. Here the first SIGTERM
    raises `Terminated` where the main thread is (at the next Python
    instruction: a long computation in compiled code finishes its call
    first); a second one while cleaning up ends the process at once, as
    SIGTERM normally does. The previous handler is restored on leaving.
    Where SIGTERM is ignored (``SIG_IGN``), outside the main thread, or on
    a system without SIGTERM, the block runs unchanged.

    Examples
    --------
    >>> from astrosr.files import sigterm_exits
    >>> with sigterm_exits():
    ...     pass  # the command's work
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):  # pragma: no cover - no SIGTERM here
        yield
        return
    if previous == signal.SIG_IGN:
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals are the main thread's
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
