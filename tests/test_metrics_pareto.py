import itertools
import math

import numpy as np
import torch

from amq.metrics import jsd, kl
from amq.search.pareto import front_indices, hypervolume


def test_jsd_properties():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(5, 50, generator=g), -1)
    q = torch.log_softmax(torch.randn(5, 50, generator=g), -1)
    assert torch.allclose(jsd(p, p), torch.zeros(5), atol=1e-6)
    assert torch.allclose(jsd(p, q), jsd(q, p), atol=1e-6)
    assert bool((jsd(p, q) > 0).all()) and bool((jsd(p, q) <= math.log(2) + 1e-6).all())
    assert torch.allclose(kl(p, p), torch.zeros(5), atol=1e-6) and bool((kl(p, q) > 0).all())


def test_front_and_hypervolume_match_brute_force():
    rng = np.random.default_rng(1)
    mem, loss = rng.random(40).tolist(), rng.random(40).tolist()
    idx = front_indices(mem, loss)
    brute = [
        i
        for i in range(40)
        if not any(mem[j] <= mem[i] and loss[j] <= loss[i] and (mem[j], loss[j]) != (mem[i], loss[i]) for j in range(40))
    ]
    assert sorted(idx) == sorted(brute)
    # hypervolume by grid counting
    ref = (1.0, 1.0)
    grid = np.linspace(0, 1, 401)[:-1] + 1 / 800
    covered = sum(any(x >= mem[i] and y >= loss[i] for i in idx) for x, y in itertools.product(grid, grid))
    assert abs(hypervolume(mem, loss, ref) - covered / 400**2) < 0.01
