"""Many stacks at once on dask.distributed: `process_stacks` and what it returns.

The worker side imports the pipeline (`astrosr.MultiFrameSR`) only when a
task runs; Dask only when `process_stacks` is called. See
`astrosr.parallel` for the worker processes of the local cluster.
"""

import contextlib
import dataclasses
import inspect
import operator
import os
import time
import traceback as _traceback
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..misfit import MisfitWarning, fit_passed, recorded_number

__all__ = ["process_stacks", "StackResult", "stack_names", "worker_environment",
           "DASK_INSTALL", "MIN_WORKER_MEMORY"]


#: What to install when Dask is missing.
DASK_INSTALL = 'pip install "astrosr-gan[dask]"'

#: The least memory (bytes) a worker of the local cluster is given: its
#: default number of workers is capped so that each has at least this much
#: (the interpreter with the pipeline and one stack; TensorFlow and a
#: refinement model take about 1 GiB of it).
MIN_WORKER_MEMORY = 2 * 2 ** 30

#: Thread counts of the numerical libraries, read when NumPy is imported:
#: they must be in the environment before the worker process starts.
_BLAS_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class StackResult:
    """What became of one stack of `process_stacks`.

    Parameters
    ----------
    name : str
        The stack's name (the mapping's key, the folder's name, or
        ``stack-000``, ``stack-001``... by position).
    ok : bool
        True when the pipeline ran and its result was written (with
        ``output_dir``) or returned.
    path : `~pathlib.Path` or None
        The file written (as the worker saw it), with ``output_dir``.
    result : `~astropy.nddata.CCDData` or None
        The result itself, without ``output_dir``.
    error : str or None
        Why the stack failed (the exception's message).
    error_type : str or None
        The exception's class name (``"OSError"``, ``"FileExistsError"``,
        ``"KilledWorker"``...), or ``"MisfitWarning"`` for a result refused
        because it does not fit its frames (``allow_misfit=False``).
    traceback : str or None
        The formatted traceback of the failure, from the worker.
    seconds : float or None
        Time the worker spent on the stack (reading, pipeline, writing).
    chi2red : float or None
        The result's reduced chi-square against its frames (``CHI2RED``).
    fit_ok : bool or None
        Whether the result reproduces its frames within their noise
        (``CHI2OK``); None when the stack failed before a result.
    warnings : tuple of str
        The warnings the pipeline gave on this stack (user warnings, as
        ``"Category: message"``, each once).
    """

    name: str
    ok: bool
    path: Path | None = None
    result: object = dataclasses.field(default=None, repr=False)
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = dataclasses.field(default=None, repr=False)
    seconds: float | None = None
    chi2red: float | None = None
    fit_ok: bool | None = None
    warnings: tuple = ()

    def summary(self):
        """One line: the name, ``ok`` or ``FAILED``, the reduced chi-square or the error.

        Returns
        -------
        str
        """
        if not self.ok:
            return f"{self.name}: FAILED ({self.error_type}: {_first_line(self.error)})"
        parts = [f"{self.name}: ok"]
        if self.chi2red is not None:
            parts.append(f"chi2_red {self.chi2red:.3f}" + ("" if self.fit_ok is not False
                                                           else " (misfit)"))
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        text = ", ".join(parts)
        return text + (f" -> {self.path}" if self.path is not None else "")


def worker_environment(threads=1):
    """Environment variables for a worker process that runs one stack at a time.

    Parameters
    ----------
    threads : int
        Threads the worker's numerical libraries may use (the cores of the
        machine divided among its workers).

    Returns
    -------
    dict of str to str
        ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``
        (read when NumPy is first imported: set them before the worker
        process starts), ``TF_NUM_INTRAOP_THREADS``,
        ``TF_NUM_INTEROP_THREADS`` (TensorFlow's thread pools) and
        ``TF_CPP_MIN_LOG_LEVEL`` (`astrosr.progress.TF_ENVIRONMENT`).
    """
    from ..progress import TF_ENVIRONMENT

    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    env = {name: str(threads) for name in _BLAS_VARIABLES}
    env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    env.update(TF_ENVIRONMENT)
    return env


def stack_names(stacks, *, files=False):
    """The names `process_stacks` gives the stacks (and their files ``<name>.fits``).

    Parameters
    ----------
    stacks : sequence or mapping
        As for `process_stacks`.
    files : bool
        Also check that every name can be a file name (``output_dir``).

    Returns
    -------
    list of str
        In the order of ``stacks``: the mapping's keys; else a folder's name
        (``m31`` for ``data/m31``, and for a pattern of files in one folder,
        ``data/m31/*.fits``); else ``stack-000``, ``stack-001``... by
        position.

    Raises
    ------
    TypeError
        If ``stacks`` is not a sequence or mapping of stacks (one folder, one
        array), or a mapping's key is not a string.
    ValueError
        If two stacks have the same name, or (``files``) a name is not a
        plain file name.
    """
    return [name for name, _ in _named_stacks(stacks, files)]


def process_stacks(stacks, *, client=None, workers=None, output_dir=None, overwrite=False,
                   progress=True, allow_misfit=True, **pipeline_options):
    """Run `astrosr.MultiFrameSR` on many stacks, one dask.distributed task per stack.

    Parameters
    ----------
    stacks : sequence or mapping
        The stacks: each is what `astrosr.MultiFrameSR.run` accepts (a list
        of CCDData or of FITS paths, a folder of FITS files, a glob pattern,
        a 3-D array, a `~astrosr.FrameStack`), or a mapping name -> stack.
        Paths are read by the workers: on a cluster, give paths they see (a
        shared file system). Stacks in memory are sent to the workers once
        each (``client.scatter``).
    client : `distributed.Client`, str or None
        Where to run: a client, the address of a running scheduler
        (``"tcp://host:8786"``; a client is made and closed here), or None:
        a `distributed.LocalCluster` of ``workers`` processes (one thread
        each, see `worker_environment`) is started on this machine and
        closed at the end.
    workers : int, optional
        Worker processes of the local cluster (``client=None`` only).
        Default: as many as there are stacks, at most one per core and at
        most one per `MIN_WORKER_MEMORY` of available memory; each worker
        gets an equal share of the machine's memory (``memory_limit``).
    output_dir : str or path-like, optional
        Each worker writes its result to ``output_dir/<name>.fits``
        (`astrosr.nddata.write_fits`: atomic, no partial file), creating the
        folder if needed, and sends back only its `StackResult`. A path as
        the workers see it. Default: the results come back in the records.
    overwrite : bool
        Replace existing output files. Without it, a stack whose file exists
        fails (before its pipeline runs) with a `FileExistsError` naming
        the file.
    progress : bool
        A progress bar over the completed stacks (on stderr).
    allow_misfit : bool
        False: a result that does not reproduce its frames within their
        noise (``CHI2OK`` false) is a failure: not written nor returned,
        ``error_type="MisfitWarning"`` (as ``astrosr batch`` without
        ``--allow-misfit``). True (default): it is written or returned like
        any other, with ``fit_ok=False`` and the warning in its record.
    **pipeline_options
        Options of `astrosr.MultiFrameSR` (``scale``, ``psf``, ``refine``,
        ``fusion``...), the same for every stack. They are checked here,
        before any task runs. A refinement model is best given by name (each
        worker loads it); ``progress`` is this function's own.

    Returns
    -------
    list of `StackResult`
        One per stack, in the order of ``stacks``. A stack that failed
        (anything it raised, or a worker that died while running it) has
        ``ok=False`` with the error; this function does not raise for one
        stack's failure.

    Raises
    ------
    TypeError
        If an option is not one of `astrosr.MultiFrameSR`'s, ``stacks`` is
        not a sequence or mapping of stacks, or ``client`` is of another type.
    ValueError
        If an option's value is refused by `astrosr.MultiFrameSR`, two
        stacks have the same name, a name cannot be a file name (with
        ``output_dir``), or ``workers`` is given with ``client``.
    ImportError
        If dask.distributed is not installed.
    OSError
        If the scheduler at the address ``client`` cannot be reached.

    Notes
    -----
    A script that starts the local cluster (``client=None``) must call this
    function under ``if __name__ == "__main__":``: the workers are new
    Python processes that import the script's main module.

    The local cluster does not pass on Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``):
    with it, glibc hands the pipeline's large short-lived buffers back to the
    system and maps them again, which makes the pipeline much slower. Its
    workers keep glibc's default threshold, or the caller's own
    ``MALLOC_TRIM_THRESHOLD_``. On a cluster of your own, consider the same.

    Examples
    --------
    >>> from astrosr.parallel import process_stacks
    >>> records = process_stacks({"m31": "data/m31", "m33": "data/m33"},
    ...                          output_dir="sr", scale=4)      # doctest: +SKIP
    >>> [r.summary() for r in records]                          # doctest: +SKIP
    """
    options = _checked_options(pipeline_options)
    items = _named_stacks(stacks, output_dir is not None)
    if workers is not None:
        if client is not None:
            raise ValueError("workers= sets the size of the local cluster started when "
                             "client=None; with client= the cluster's own workers run the "
                             "stacks: leave workers out")
        try:
            valid = not isinstance(workers, bool) and operator.index(workers) >= 1
        except TypeError:
            valid = False
        if not valid:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if client is not None and not isinstance(client, str) and not hasattr(client, "submit"):
        raise TypeError(f"client must be a distributed.Client, a scheduler address such as "
                        f"'tcp://host:8786', or None, got {type(client).__name__}")
    if not items:
        return []
    distributed = _import_distributed()
    from ..progress import progress_bar

    folder = None if output_dir is None else os.fspath(output_dir)
    with contextlib.ExitStack() as resources:
        if client is None:
            cluster = resources.enter_context(
                _local_cluster(distributed, int(workers or _default_workers(len(items)))))
            client = resources.enter_context(distributed.Client(cluster))
        elif isinstance(client, str):
            client = resources.enter_context(distributed.Client(client))
        futures = [client.submit(_run_stack, name, _sent(client, stack), options, folder,
                                 bool(overwrite), bool(allow_misfit), pure=False)
                   for name, stack in items]
        position = {future.key: i for i, future in enumerate(futures)}
        records = [None] * len(items)
        try:
            done = distributed.as_completed(futures)
            for future in progress_bar(done, total=len(futures), desc="stacks", unit="stack",
                                       enabled=progress):
                i = position[future.key]
                records[i] = _collected(future, items[i][0])
                future.release()
        finally:
            left = [f for f, r in zip(futures, records) if r is None]
            if left:  # interrupted: the stacks not yet done are not left running
                with contextlib.suppress(Exception):
                    client.cancel(left)
    return records


# --------------------------------------------------------------------------- the caller's side


def _checked_options(options):
    """The pipeline options, refused here when MultiFrameSR would refuse them."""
    from ..pipeline import MultiFrameSR

    accepted = [p for p in inspect.signature(MultiFrameSR).parameters if p != "progress"]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise TypeError(f"process_stacks: unknown pipeline option{'s' * (len(unknown) > 1)} "
                        f"{names}: the options are those of astrosr.MultiFrameSR "
                        f"({', '.join(accepted)})")
    MultiFrameSR(**options)  # ValueError for a value it refuses, before any task runs
    return dict(options)


def _named_stacks(stacks, to_files):
    """``[(name, stack), ...]`` in input order; names unique (and file names when written)."""
    if isinstance(stacks, Mapping):
        items = list(stacks.items())
        for name, _ in items:
            if not isinstance(name, str):
                raise TypeError(f"stack names (the mapping's keys) must be strings, got "
                                f"{name!r}")
    elif isinstance(stacks, (str, os.PathLike, np.ndarray)) or not hasattr(stacks, "__iter__"):
        raise TypeError("stacks must be a sequence of stacks or a mapping name -> stack; one "
                        f"stack ({type(stacks).__name__}) goes in a list: [stack]")
    else:
        items = [(_default_name(stack, i), stack) for i, stack in enumerate(stacks)]
    seen = {}
    for name, _ in items:
        seen[name] = seen.get(name, 0) + 1
        if to_files and (not name or name in (".", "..") or "/" in name or os.sep in name):
            raise ValueError(f"stack name {name!r} cannot be a file name in output_dir: give "
                             "stacks as a mapping with plain names")
    twice = sorted(name for name, n in seen.items() if n > 1)
    if twice:
        raise ValueError(f"stacks named {', '.join(map(repr, twice))} more than once (folders "
                         "of the same name?): rename one, or give stacks as a mapping "
                         "name -> stack")
    return items


def _default_name(stack, index):
    """A folder's name (of a pattern's folder: ``m31/*.fits`` is ``m31``), else ``stack-000``."""
    if isinstance(stack, (str, os.PathLike)):
        path = Path(os.fspath(stack))
        if any(c in path.name for c in "*?[") and not any(c in str(path.parent) for c in "*?["):
            path = path.parent  # a pattern of files in one folder
        if not any(c in str(path) for c in "*?["):
            name = path.name if path.name not in ("", ".", "..") else path.resolve().name
            if name:
                return name
    return f"stack-{index:03d}"


def _sent(client, stack):
    """A stack in memory is scattered to the cluster once; paths travel as they are."""
    if isinstance(stack, (str, os.PathLike)):
        return stack
    return client.scatter([stack], hash=False)[0]


def _default_workers(n_stacks):
    """One worker per stack, at most one per core and per `MIN_WORKER_MEMORY` available."""
    from ..resources import available_memory

    by_memory = max(1, int(available_memory() // MIN_WORKER_MEMORY))
    return max(1, min(n_stacks, _cpu_count(), by_memory))


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def _local_cluster(distributed, n_workers):
    """A LocalCluster of ``n_workers`` one-thread processes with `worker_environment`.

    Dask's nanny writes the pre-spawn variables into this process's
    environment too (the worker inherits them); they are put back as they
    were when the cluster closes. Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``
    is not passed on: the workers keep glibc's own (or the caller's) threshold.
    """
    import dask

    threads = max(1, _cpu_count() // n_workers)
    env = {k: v for k, v in worker_environment(threads).items() if k not in os.environ}
    pre_spawn = {f"distributed.nanny.pre-spawn-environ.{k}": env[k]
                 for k in _BLAS_VARIABLES if k in env}
    touched = {*env, *dask.config.get("distributed.nanny.pre-spawn-environ"), "PYTHONHASHSEED"}
    saved = {k: os.environ.get(k) for k in touched}
    # Dask's pre-spawn default MALLOC_TRIM_THRESHOLD_=65536 makes glibc give freed memory back
    # to the system at every 64 KiB: the pipeline's many short-lived large FFT and NumPy
    # buffers are then unmapped and mapped again, and a stack ran 2.4 times slower with it
    # (51.5 s against 21.3 s, warm). None drops it from the pre-spawn environment (Dask skips
    # None values): the worker keeps glibc's default (128 KiB, dynamic) or the caller's own
    # MALLOC_TRIM_THRESHOLD_, which the worker inherits.
    pre_spawn["distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"] = None
    config = {**pre_spawn, "distributed.scheduler.allowed-failures": 1}
    try:
        with dask.config.set(config):
            cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                dashboard_address=":0",  # a free port: never "8787 is already in use"
                env={k: v for k, v in env.items() if k not in _BLAS_VARIABLES})
        with cluster:
            yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"astrosr.parallel needs dask.distributed ({exc}): "
                          f"{DASK_INSTALL}") from None
    return distributed


def _collected(future, name):
    """The `StackResult` of a finished future, or a failed one for a task that did not return."""
    if future.status == "finished":
        try:
            record = future.result()
        except Exception as exc:  # noqa: BLE001 - a result that cannot be fetched
            return _failed(name, exc, _traceback.format_exc())
        if isinstance(record, StackResult):
            return record
        return StackResult(name, ok=False, error=f"the task returned {type(record).__name__}",
                           error_type="TypeError")
    if future.status == "cancelled":
        return StackResult(name, ok=False, error="the task was cancelled (the scheduler or "
                           "the client went away)", error_type="CancelledError")
    try:
        exc = future.exception()
        tb = "".join(_traceback.format_tb(future.traceback())) or None
    except Exception as fetch_error:  # noqa: BLE001 - the scheduler lost it
        exc, tb = fetch_error, None
    record = _failed(name, exc, tb)
    if record.error_type == "KilledWorker":
        record = dataclasses.replace(record, error=(
            f"{record.error}: the worker process running this stack died, most often because "
            "it needed more memory than a worker is allowed; use fewer workers (each gets more "
            "memory), or a smaller scale or tile"))
    return record


# --------------------------------------------------------------------------- the worker's side


def _run_stack(name, stack, options, output_dir, overwrite, allow_misfit):
    """One stack on a worker: read, run the pipeline, write; always a `StackResult`."""
    start = time.perf_counter()
    caught = []
    path = None
    try:
        from ..pipeline import MultiFrameSR  # here, on the worker: not at import astrosr.parallel

        if output_dir is not None:
            path = Path(output_dir) / f"{name}.fits"
            if path.exists() and not overwrite:  # before the work, not after it
                raise FileExistsError(f"{path} exists: pass overwrite=True (astrosr batch "
                                      "--overwrite) to replace it")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = MultiFrameSR(**options).run(stack)
        notes = _warning_texts(caught)
        chi2, fit_ok = recorded_number(result.meta, "CHI2RED"), fit_passed(result.meta)
        if not fit_ok and not allow_misfit:
            return StackResult(name, ok=False, error=_misfit_text(result.meta, caught),
                               error_type="MisfitWarning",
                               seconds=time.perf_counter() - start, chi2red=chi2,
                               fit_ok=False, warnings=notes)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            from ..nddata import write_fits

            write_fits(result, path, overwrite=overwrite)
            result = None
        return StackResult(name, ok=True, path=path, result=result,
                           seconds=time.perf_counter() - start, chi2red=chi2, fit_ok=fit_ok,
                           warnings=notes)
    except Exception as exc:  # noqa: BLE001 - one stack's failure is its record, not the batch's
        record = _failed(name, exc, _traceback.format_exc(), time.perf_counter() - start)
        return dataclasses.replace(record, warnings=_warning_texts(caught))


def _failed(name, exc, tb=None, seconds=None):
    return StackResult(name, ok=False, error=str(exc) or type(exc).__name__,
                       error_type=type(exc).__name__, traceback=tb, seconds=seconds)


def _warning_texts(caught):
    """User warnings as ``"Category: message"``, each once, in order."""
    texts = [f"{w.category.__name__}: {w.message}" for w in caught
             if issubclass(w.category, UserWarning)]
    return tuple(dict.fromkeys(texts))


def _misfit_text(meta, caught):
    """The pipeline's own misfit warning, else one built from the header."""
    misfits = [str(w.message) for w in caught if issubclass(w.category, MisfitWarning)]
    if misfits:
        text = misfits[-1]
    else:
        chi2, bound = recorded_number(meta, "CHI2RED"), recorded_number(meta, "CHI2MAX")
        figure = "reduced chi-square" + ("" if chi2 is None else f" {chi2:.3g}")
        figure += "" if bound is None else f" > bound {bound:g}"
        text = f"{figure}: the frames are not reproduced within their noise"
    return f"{text}; not written (allow_misfit=False; astrosr batch --allow-misfit writes it)"


def _first_line(text):
    return str(text).splitlines()[0] if text else ""
