"""Dask: many stacks at once, one task per stack; images larger than memory, block by block.

`process_stacks` runs `astrosr.MultiFrameSR` on every stack of a list (or a
mapping name -> stack) as one `dask.distributed` task each, on a cluster of
any size: a `distributed.LocalCluster` it starts on this machine, or the
scheduler of an HPC or Kubernetes cluster (see the page "Many stacks in
parallel" of the documentation). Each worker reads its stack, runs the
pipeline and, with ``output_dir``, writes the result itself, so only a small
`StackResult` record travels back. A stack that fails (a corrupt file, a
misfit refused, a worker that died) is a record with ``ok=False`` and the
error; the other stacks go on.

`enhance_blocks` and `fuse_blocks` are `astrosr.enhance` and `astrosr.fuse`
for images held as dask arrays (a CCDData whose data is a `dask.array.Array`,
or a numpy one with ``chunks=``): the local steps run block by block
(``map_overlap`` with halos for the network, strips of output rows for
drizzle), the numbers that couple the whole image are computed once before
the blocks, and the result is a `BlockImage`, a CCDData of dask arrays
computed on any scheduler. What is global by nature (the observation-
consistency fit, multi-frame reconstruction, outlier rejection) is computed
in memory and wrapped, and the HISTORY says so (page "Many stacks in
parallel" of the documentation, section on dask arrays).

Nothing here imports Dask or TensorFlow when the module is imported: Dask is
imported by the functions that use it (the ``dask`` extra, ``pip install
"astrosr-gan[dask]"``), TensorFlow by the workers that run a network.

Worker processes
----------------
A worker runs one stack at a time (one thread per worker process: the
pipeline's NumPy and FFT work holds memory per stack, and its threads are
the libraries' own). The local cluster that `process_stacks` starts sets, in
each worker's environment, the thread counts of those libraries to the
machine's cores divided among the workers (`worker_environment`): OpenMP,
MKL and OpenBLAS before the worker process starts (Dask's
``distributed.nanny.pre-spawn-environ``, since NumPy reads them when it is
first imported), TensorFlow's intra- and inter-op pools and its log level
when the worker starts (the nanny's ``env``). A variable already set in the
caller's environment is left as the caller set it. Dask's default
``MALLOC_TRIM_THRESHOLD_=65536`` is not passed on (it makes the pipeline's
large short-lived buffers go back to the system and come again, much slower):
the workers keep glibc's default. On a cluster of your own, set the same
variables where its workers start (`worker_environment` gives them).
"""

from .arrays import (DEFAULT_SAMPLE, FILL_REACH, SATURATION_REACH, STRIP_METHODS, BlockImage,
                     enhance_blocks, fuse_blocks, is_dask_backed)
from .stacks import (DASK_INSTALL, MIN_WORKER_MEMORY, StackResult, process_stacks, stack_names,
                     worker_environment)

__all__ = ["process_stacks", "StackResult", "stack_names", "worker_environment",
           "enhance_blocks", "fuse_blocks", "BlockImage", "is_dask_backed", "DASK_INSTALL",
           "MIN_WORKER_MEMORY",
           "DEFAULT_SAMPLE", "FILL_REACH", "SATURATION_REACH", "STRIP_METHODS"]
