"""Speed as a budget: how long our kernels take on each layer shape at each bit-width on this GPU,
measured once per device and cached, and what a plan's decode step costs by that table.

A table row is one `amq_kernels.matmul` call (M input rows, 1 for decode at batch 1) on an (N out, K in)
layer at b bits, in microseconds, timed as bench_kernels.py times: CUDA graphs cycling distinct weight
copies, so the weights come from HBM. On a CPU the call is the reference path, timed by the clock (a
table for tests and dry runs, not for a budget). The cache: `cache_root()/latency/<device>-g<group>-m<M>.json`,
one per device; it is measured again where the kernels, Triton or torch differ from what it was made with.

A plan's step time is the sum of its layers' rows: our GEMMs of one decode step, not attention, norms or
the 16-bit lm_head (`overhead_us` adds those when the user knows them).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from amq.config import AMQConfigError
from amq.models import LayerInfo
from amq.tiny import cache_root

LATENCY_FORMAT = 1
COPIES = 8  # distinct weight copies a timing cycles through (more than L2 holds at 7B shapes)
UNITS = ("us", "tok_s")  # budget units this module serves: GEMM microseconds a step, tokens a second


class LatencyTable(BaseModel):
    """Microseconds of one kernel call per (N, K, bits), measured on `device`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = LATENCY_FORMAT
    device: str
    software: str  # kernels, Triton and torch it was measured with: another version measures again
    rows: int  # M, input rows a call
    group_size: int
    us: dict[str, float]  # key(n, k, bits) -> microseconds a call

    @staticmethod
    def key(n: int, k: int, bits: int) -> str:
        return f"{n}x{k}@{bits}"

    def get(self, n: int, k: int, bits: int) -> float | None:
        return self.us.get(self.key(n, k, bits))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)  # a crash leaves the old table, never half a new one

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        try:
            table = cls.model_validate_json(Path(path).read_text())
        except (OSError, ValidationError, ValueError) as exc:
            raise AMQConfigError(f"{path}: not a latency table ({str(exc).splitlines()[0]})") from None
        if table.format > LATENCY_FORMAT:
            raise AMQConfigError(f"{path}: latency table format {table.format} is newer than this amq reads ({LATENCY_FORMAT})")
        return table


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def software() -> str:
    """The kernels' source (a hash of amq_kernels' files), Triton and torch: what a table was measured with."""
    import hashlib

    import amq_kernels

    src = hashlib.sha256()
    for f in sorted(Path(amq_kernels.__file__).parent.glob("*.py")):
        src.update(f.read_bytes())
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "none"
    return f"amq_kernels {src.hexdigest()[:12]}, triton {tv}, torch {torch.__version__}"


def cache_path(device: torch.device, group_size: int, rows: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name(device)).strip("-").lower()
    return cache_root() / "latency" / f"{slug}-g{group_size}-m{rows}.json"


def time_call(n: int, k: int, bits: int, group_size: int, rows: int, device: torch.device) -> float:
    """Microseconds of `amq_kernels.matmul` on a random (n, k) layer at `bits` (see the module doc)."""
    from amq_kernels import pack

    g = torch.Generator(device=device).manual_seed(n * 31 + k * 7 + bits)

    def layer():
        codes = torch.randint(0, 2**bits, (n, k), device=device, dtype=torch.uint8, generator=g)
        scale = (torch.rand(n, k // group_size, device=device, generator=g) * 0.01 + 0.001).half()
        zero = (torch.rand(n, k // group_size, device=device, generator=g) * (2**bits - 1)).half()
        return pack(codes, scale, zero, bits, group_size)

    x = torch.randn(rows, k, device=device, dtype=torch.float16, generator=g)
    if device.type == "cuda":
        from triton.testing import do_bench_cudagraph

        from amq_kernels.matmul import matmul

        ps = [layer() for _ in range(COPIES)]

        def run():
            for p in ps:
                matmul(x, p)

        run()  # compile outside the timed graph
        return do_bench_cudagraph(run) * 1e3 / len(ps)
    from amq_kernels.matmul import reference_matmul  # the CPU path QuantLinear takes

    p = layer()
    reference_matmul(x.float(), p)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        reference_matmul(x.float(), p)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def latency_for(
    layers: Sequence[LayerInfo],
    choices: Sequence[int],
    group_size: int,
    device: torch.device,
    rows: int = 1,
    path: Path | None = None,
    show_progress: bool = True,
) -> LatencyTable:
    """The table for these layers on `device`: the cached one (`path`, else this device's cache file),
    completed by timing each (shape, bits) it lacks (`time_call`) and saved; timed anew if made on another
    device or software."""
    from tqdm import tqdm

    path = path or cache_path(device, group_size, rows)
    old = LatencyTable.load(path) if path.is_file() else None
    if old is not None and (old.device, old.software, old.rows, old.group_size) != (device_name(device), software(), rows, group_size):
        old = None
    us = dict(old.us) if old is not None else {}
    shapes = sorted({(lay.out_features, lay.in_features) for lay in layers})
    todo = [(n, k, b) for n, k in shapes for b in choices if LatencyTable.key(n, k, b) not in us]
    for n, k, b in tqdm(todo, desc=f"kernel latency on {device_name(device)}", disable=not show_progress or not todo):
        us[LatencyTable.key(n, k, b)] = time_call(n, k, b, group_size, rows, device)
    table = LatencyTable(device=device_name(device), software=software(), rows=rows, group_size=group_size, us=us)
    if old is None or todo:
        table.save(path)
    return table


def cost_table_ns(table: LatencyTable, layers: Sequence[LayerInfo], choices: Sequence[int]) -> np.ndarray:
    """(layers, choices) nanoseconds a call, the table's rows for these layers (as CostModel.table() gives bytes)."""
    out = np.zeros((len(layers), len(choices)), dtype=np.int64)
    for i, lay in enumerate(layers):
        for j, b in enumerate(choices):
            us = table.get(lay.out_features, lay.in_features, b)
            if us is None:
                raise AMQConfigError(f"the latency table ({table.device}) has no {lay.out_features} x {lay.in_features} at {b} bits")
            out[i, j] = round(us * 1000)
    return out


def budget_to_ns(value: float, unit: str, overhead_us: float = 0.0) -> int:
    """The GEMM nanoseconds a decode step may take: `value` us of GEMMs, or `value` tokens a second
    of which `overhead_us` a step goes elsewhere."""
    if unit == "us":
        return int(value * 1000)
    if unit == "tok_s":
        step = 1e6 / value - overhead_us
        if step <= 0:
            raise AMQConfigError(f"{value:g} tok/s leaves no time for the GEMMs after overhead_us={overhead_us:g}")
        return int(step * 1000)
    raise AMQConfigError(f"unit {unit!r} is not a speed budget ({' or '.join(UNITS)})")


def step_us(table: LatencyTable, layers: Sequence[LayerInfo], bits: Sequence[int]) -> float:
    """Our GEMMs' microseconds in one step of `bits`, by the table."""
    choices = sorted(set(bits))
    ns = cost_table_ns(table, layers, choices)
    return float(sum(ns[i, choices.index(b)] for i, b in enumerate(bits)) / 1000)
