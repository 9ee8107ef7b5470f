"""Running the points of a sweep: in this process, on a local Dask cluster of processes, or on an
existing Dask cluster by address (`dask.distributed`; https://distributed.dask.org).

Each point is an independent call ``function(*args)``; a point's random numbers come from its own
seed (:func:`point_seed`: the base seed and the point index through `numpy.random.SeedSequence`), so
the results are the same whichever way, and in whichever order, the points run. The engine is Dask's:
this module only chooses the client and keeps the order of the results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

#: `scheduler` value that runs the points one after the other in this process.
SERIAL = "serial"


def point_seed(base_seed: int, index: int) -> int:
    """A 63-bit seed for point ``index`` of a sweep seeded with ``base_seed`` (SeedSequence entropy)."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def run_points(
    function: Callable,
    args: Sequence[tuple],
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: str = "10s",
) -> list:
    """``[function(*a) for a in args]``, computed where ``scheduler`` says.

    Args:
        function: a module-level (picklable) function.
        args: one tuple of (picklable) arguments per point.
        scheduler: None: a local cluster of ``workers`` processes (one thread each) for this call;
            "serial": this process; otherwise the address of a running Dask scheduler
            ("tcp://host:8786"), whose workers must be able to import moire_cli.
        workers: processes of the local cluster (default: min(points, CPUs)).
        timeout: for connecting to a scheduler by address (Dask's time string).

    Returns:
        The results in the order of ``args``.

    Raises:
        ValueError: workers < 1.  OSError / TimeoutError from Dask when the address cannot be reached.
    """
    args = list(args)
    if scheduler == SERIAL or len(args) == 0:
        return [function(*a) for a in args]
    from dask.distributed import Client, LocalCluster

    if scheduler is None:
        n = workers if workers is not None else min(len(args), os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"workers must be ≥ 1, got {n}")
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            return _gather(client, function, args)
    with Client(scheduler, timeout=timeout) as client:
        return _gather(client, function, args)


def _gather(client, function: Callable, args: list) -> list:
    futures = [client.submit(function, *a, pure=False, key=f"{getattr(function, '__name__', 'point')}-{i}")
               for i, a in enumerate(args)]
    return client.gather(futures)


def monte_carlo_sweep(
    models: Sequence,
    temperatures: np.ndarray,
    seed: int = 0,
    scheduler: str | None = None,
    workers: int | None = None,
    **settings,
) -> list:
    """`montecarlo.run_monte_carlo` for every model (one task per sweep point, all temperatures of a
    point in that task), point i seeded with ``point_seed(seed, i)``.

    Args:
        settings: supercell, sweeps, equilibration, blocks, measure_every, psi6_every.

    Returns:
        list of `montecarlo.MonteCarloResult`, in the order of ``models``.
    """
    from moire_cli.montecarlo import run_monte_carlo

    keys = ("supercell", "sweeps", "equilibration", "blocks", "measure_every", "psi6_every")
    unknown = set(settings) - set(keys)
    if unknown:
        raise TypeError(f"unknown Monte Carlo settings {sorted(unknown)}")
    defaults = {"supercell": (12, 12), "sweeps": 2000, "equilibration": 500, "blocks": 20, "measure_every": 1,
                "psi6_every": 10}
    defaults.update(settings)
    temps = np.asarray(temperatures, dtype=float)
    args = [(m, temps, *(defaults[k] for k in keys), point_seed(seed, i)) for i, m in enumerate(models)]
    return run_points(run_monte_carlo, args, scheduler, workers)
