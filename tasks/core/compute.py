"""Where the data steps' per-partition work runs: here, on a local Dask cluster, or on a
scheduler somewhere else (params.yaml, `compute`).

Work is a pure function of one picklable job (bytes in, bytes out), so its result is
the same wherever it runs, and a worker on another machine needs neither this checkout's
files nor its paths. Results come back in the order of the jobs; at most `in_flight`
jobs per worker wait at a time, so the step's memory is bounded by them, not by the data.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tasks.core.config import ComputeParams
from tasks.core.errors import StepError
from tasks.core.secrets import mask

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
Mapper = Callable[[Callable[[J], R], Iterable[J]], Iterator[R]]


def where(cfg: ComputeParams) -> str:
    """Where work would run, in words: 'in process', 'local cluster of 2', or the address."""
    address = os.environ.get(cfg.address_env)
    if address:
        return f"scheduler {mask(address)}"
    return "in process" if cfg.workers == 1 else f"local cluster of {cfg.workers} workers"


@contextmanager
def mapper(cfg: ComputeParams) -> Iterator[Mapper[Any, Any]]:
    """A `map(fn, jobs)` for the step's lifetime: in this process, or on Dask."""
    address = os.environ.get(cfg.address_env)
    if not address and cfg.workers == 1:
        yield lambda fn, jobs: (fn(job) for job in jobs)
        return
    with _client(cfg, address) as client:
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        log.info("compute: %s (%d workers)", where(cfg), workers)
        yield lambda fn, jobs: _ordered(client, fn, jobs, workers * cfg.in_flight)


@contextmanager
def _client(cfg: ComputeParams, address: str | None) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    # Tasks are pure: a worker lost mid-job is retried elsewhere, not silently skipped.
    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's
    # mmap threshold at 128 KiB: every large pandas buffer is then mapped and unmapped
    # afresh, and validate's batches ran at half speed (bench/scale.py). Left unset, as
    # in a plain process.
    settings = {"distributed.scheduler.allowed-failures": 2,
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}  # fmt: skip
    with dask.config.set(settings):
        if address:
            try:
                client = Client(address, timeout=cfg.connect_timeout_seconds)
            except (OSError, TimeoutError) as exc:
                raise StepError(
                    f"compute: no Dask scheduler answers at {mask(address)} (from "
                    f"{cfg.address_env}) within {cfg.connect_timeout_seconds:g} s: {exc}"
                ) from None
            with client:
                yield client
            return
        # Processes, one thread each: the work is pandas, which holds the GIL. The
        # scheduler's HTTP server on any free port: two steps of two checkouts may run.
        # The workers' scratch space is the step's own, removed with the cluster.
        with (
            tempfile.TemporaryDirectory(prefix="plumber-dask-") as scratch,
            LocalCluster(
                n_workers=cfg.workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=logging.WARNING, local_directory=scratch,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            yield client


def _ordered(client: Any, fn: Callable[[J], R], jobs: Iterable[J], window: int) -> Iterator[R]:
    """fn over jobs on the cluster, results in job order, at most `window` in flight."""
    pending: deque[Any] = deque()
    try:
        for job in jobs:
            pending.append(client.submit(fn, job, pure=False))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
