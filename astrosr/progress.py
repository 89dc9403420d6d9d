"""Progress bars and a quiet start: what the user sees while astrosr works.

`progress_bar` is the one progress bar of astrosr (tqdm, with rate and ETA,
on stderr): every step that can last more than a few seconds shows it when
its ``progress=True`` (the command line passes ``progress=not --quiet``).

`quiet_tensorflow` imports TensorFlow without its start-up noise (CUDA probes
on machines without a GPU, CPU-feature notices, ``tf.function`` retracing
paragraphs); `astrosr.models` calls it before it loads Keras.
"""

import contextlib
import os
import re
import sys
import tempfile

__all__ = ["progress_bar", "quiet_tensorflow", "tensorflow_environment"]


def progress_bar(iterable=None, *, total=None, desc=None, enabled=True, unit="it", leave=False):
    """A tqdm progress bar with rate and ETA, or a silent stand-in when not ``enabled``.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over (as ``tqdm(iterable)``); None for a bar updated
        by hand (``bar.update(n)``).
    total : int, optional
        Number of steps (default ``len(iterable)`` when it has one).
    desc : str, optional
        What is being done, before the bar.
    enabled : bool
        False: no output at all (the object still iterates and updates).
    unit : str
        Name of one step ("frame", "tile"...).
    leave : bool
        Keep the finished bar on the terminal.

    Returns
    -------
    `tqdm.tqdm`
        Use it as an iterable or a context manager (``with progress_bar(...)
        as bar: ... bar.update()``).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit=unit, leave=leave,
                dynamic_ncols=True, file=sys.stderr)


# --------------------------------------------------------------------------- TensorFlow

#: Environment TensorFlow reads when it is first imported: C++ logging at
#: ERROR level or above only (hides "failed call to cuInit" on CPU machines;
#: real errors are raised as Python exceptions).
TF_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}

#: Lines TensorFlow's shared libraries print to the C-level stderr while they
#: load, before any logging setting applies (static initialisers using absl
#: logging before ``absl::InitializeLog``): they are dropped from what the
#: import printed; every other line is passed on.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IW]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] "  # absl INFO, WARNING: "I0000 00:00:... x.cc:31]"
    r"|cudart_stub\.cc|cpu_feature_guard\.cc|cuda_(?:dnn|fft|blas|platform|driver)\.cc"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|oneDNN custom operations are on")


def tensorflow_environment():
    """Set TensorFlow's logging environment (`TF_ENVIRONMENT`) unless the user has set it."""
    for key, value in TF_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def quiet_tensorflow():
    """Import TensorFlow without its start-up noise; silence its Python loggers.

    Sets `TF_ENVIRONMENT` (unless already set), imports ``tensorflow`` with
    the process's C-level stderr caught, and passes on every caught line that
    is not known start-up noise (CUDA probes, CPU-feature notices); then sets
    TensorFlow's and absl's Python loggers to ERROR (``tf.function``
    retracing warnings). Does nothing the second time, or when TensorFlow is
    already imported (only the loggers are set).

    Returns
    -------
    bool
        False when TensorFlow is not installed.
    """
    tensorflow_environment()
    if "tensorflow" not in sys.modules:
        try:
            with _stderr_filtered(_STARTUP_NOISE):
                import tensorflow  # noqa: F401
        except ImportError:
            return False
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    return True


@contextlib.contextmanager
def _stderr_filtered(noise):
    """Catch what is written to file descriptor 2 (C libraries too); replay lines not ``noise``.

    C libraries write to descriptor 2 whatever ``sys.stderr`` is; Python-level
    writes are flushed first. Where descriptor 2 cannot be duplicated (no
    stderr at all) nothing is caught.
    """
    fd = 2
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
