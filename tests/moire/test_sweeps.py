"""Sweeps on Dask (moire_cli/sweeps.py): a 2-worker local cluster gives the serial numbers."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli import crystals, dynamics, sweeps
from moire_cli.potentials import Coulomb, MoirePotential


def _models():
    out = []
    for a in (8.0, 10.0, 12.0):
        pot = MoirePotential(a, 15.0, np.deg2rad(45.0), -1)
        out.append(dynamics.LatticeModel(crystals.build_crystal("triangular", a), pot, Coulomb(5.1), 0.45))
    return out


def test_point_seeds_are_distinct_and_reproducible():
    seeds = [sweeps.point_seed(5, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [sweeps.point_seed(5, i) for i in range(100)]
    assert sweeps.point_seed(6, 0) != seeds[0] and 0 <= min(seeds) and max(seeds) < 2**63


def test_two_worker_local_cluster_gives_the_serial_results():
    run = dict(supercell=(3, 3), sweeps=24, equilibration=8, blocks=4, psi6_every=6)
    temps = np.array([2.0, 20.0])
    serial = sweeps.monte_carlo_sweep(_models(), temps, seed=3, scheduler=sweeps.SERIAL, **run)
    dask = sweeps.monte_carlo_sweep(_models(), temps, seed=3, workers=2, **run)
    assert len(dask) == 3
    for s, d in zip(serial, dask, strict=True):
        np.testing.assert_array_equal(s.mean_square_displacement, d.mean_square_displacement)
        np.testing.assert_array_equal(s.traces["psi6"], d.traces["psi6"])
        assert s.seed == d.seed
    assert serial[0].seed != serial[1].seed
    assert not np.array_equal(serial[0].traces["energy"], serial[1].traces["energy"])


def test_unknown_settings_and_unreachable_scheduler_are_refused():
    with pytest.raises(TypeError, match="unknown Monte Carlo settings"):
        sweeps.monte_carlo_sweep(_models()[:1], [1.0], scheduler=sweeps.SERIAL, steps=3)
    with pytest.raises((OSError, TimeoutError)):
        sweeps.run_points(abs, [(-1,)], scheduler="tcp://127.0.0.1:9", timeout="1s")
