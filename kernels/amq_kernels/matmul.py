"""y = x @ W^T for a bit-plane packed W (see packing.py), in Triton.

Four paths; `matmul` picks by M (and bits, dtype):
- M == 1, `gemv_kernel`: no tensor cores. K is split over SPLIT_K programs so that a
  4096-wide layer still fills the GPU at batch 1. The words of a (BLOCK_K // per_word, BLOCK_N)
  tile are never expanded into a code tile: each word is unpacked in place, a pair of adjacent
  codes (16 bits apart) at a time, and multiplied with the matching pair of inputs. On CUDA the
  default is SUBNORMAL (`pair_dot_sub_ptx`): a pair masked where it sits is two exact fp16
  subnormals, one fp16x2 fma with inputs pre-scaled by powers of two per K step; 4 words a column
  share an fp16 accumulator (WORDS), inputs are read 16 bytes at a time (XVEC). The loop before it
  (`pair_dot_ptx`, `SUBNORMAL: 0`, and bf16 at 3 bits) ORs an exponent in and guards splits whose
  inputs reach 4096 (GUARD). Under the interpreter the pairs become exact fp32 values through a bf16
  exponent trick. The group's scale and zero factor out,
  x . ((q - z) s) = s (x . q - z sum(x)), so they are applied once per word, not per code.
- M up to DEQUANT_MIN_M - 1, `packed_matmul_kernel`: weight tiles are dequantized and fed to
  `tl.dot` (tensor cores); split K, 16-row tiles up to M = 16, 64 x 128 tiles above. Up to
  M = 16 the tile is built pair by pair (PAIRS: one lop3 + sub + fma in 16-bit pairs per two
  codes, inline PTX) and is the MMA's left operand (SWAP: y^T = W x^T, so the weights fill the
  64-row side of Hopper's warpgroup MMA and the few x rows its narrow side).
- opt-in (config ROWS4), M in 2..4, `gemv4_kernel`: the M = 1 loop (no guard), each word
  unpacked once for 4 rows (the default before PAIRS + SWAP tiles beat it).
- prefill (M >= DEQUANT_MIN_M): the layer is dequantized once into a 16-bit buffer
  (`dequant_kernel`) and cuBLAS multiplies (the dequantization is amortized over the rows).

K splits meet in `_epilogue`: by default through relaxed atomics into a zeroed output (16-bit
atomics on Hopper, else an fp32 buffer); config `SERIAL: 1` instead sums fp32 partials in split
order in the last-arriving program (deterministic, more accurate in bf16; 3-15% slower on H100 at
M = 1, kernels_gemv_sweep.md, kernels_reduce_sweep.md).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from amq_kernels.packing import PackedWeight, plane_widths
from amq_kernels.ptx import packed_offsets, pair_dequant_ptx, pair_dot_ptx, pair_dot_sub_ptx

# Every launch asks for fused multiply-adds: the fp32 scale/zero epilogues and accumulations were
# measured (and their tolerances set) with FMAs, which Triton up to 3.9 fuses by default and 3.10
# no longer does. The interpreter ignores the option.
FUSE = {"enable_fp_fusion": True}

# Triton's CPU interpreter (TRITON_INTERPRET=1) computes bf16 tl.dot wrongly (numpy has no
# bf16): there, and only there, the bf16 dot runs in fp32.
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton

    from amq_kernels.jit import dequant_kernel, gemv4_kernel, gemv_group_kernel, gemv_kernel, packed_matmul_kernel
except ImportError:  # pragma: no cover - the CPU fallback below needs no triton
    triton = None


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


# From this many rows on, dequantizing the layer once and calling cuBLAS: at M = 64 the fused
# kernel with split K is 1.6-3.0x faster than that, at M = 256 0.87-1.09x of it
# (kernels_mid_m_sweep.md)
DEQUANT_MIN_M = 128


def _atomic_16bit(device: torch.device) -> bool:
    """fp16/bf16 atomics straight into the output (Hopper and newer): no fp32 buffer, no cast."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def _few_shifts(bits: int) -> bool:
    """The decode PTX with one word shift (FEW_SHIFTS) at M = 1, alone or grouped: 1.04-1.15x at
    2/3 bits, 0.95-1.03x at 4 (kernels_ptx_sweep.md)."""
    return bits <= 3


def _subnormal_default(bits: int, dtype: torch.dtype) -> bool:
    """Whether M = 1 runs SUBNORMAL by default: not for bf16 at 3 bits, where it lost to the loop before
    (17.6 vs 14.4 us on 11008 x 4096, H200: kernels_subnormal_h200.md)."""
    return not (dtype == torch.bfloat16 and bits == 3)


def _tiling(m: int, n: int, k: int, bits: int, group: int, device: torch.device, dtype: torch.dtype = torch.float16) -> dict[str, int]:
    """A small fixed config list, picked by shape (swept on H100: kernels_gemv_sweep.md for M = 1,
    kernels_pairs_sweep.md for M = 2..16 and the PAIRS choice at 17..127, kernels_mid_m_sweep.md
    for those tiles); fp16 and bf16 measured alike."""
    block_k = min(group, 128)
    steps = k // block_k
    if m == 1:
        # SUBNORMAL (2 instructions a pair of codes), inputs read 16 bytes at a time, 4 words a column to one fp16
        # accumulator, 2 warps, ~8 waves of programs; fp16: 512-wide tiles (8 columns a thread) where that still
        # leaves 4 programs an SM, else 256 (within 5% of the best of a 16-config grid in 12 of 12 cases); bf16:
        # 256 (512 lost 1-9% to the loop before on 11008 x 4096): H200, kernels_subnormal_h200.md. FEW_SHIFTS is
        # the option of the loop before, for configs that turn SUBNORMAL off.
        sms = _sm_count(device)
        if not _subnormal_default(bits, dtype):  # the loop before, its tiles
            block_n, waves, warps, sub = 256, 4, 2, {}
        else:
            wide = dtype != torch.bfloat16 and -(-n // 512) * steps >= 4 * sms
            block_n, waves, warps, sub = (512 if wide else 256), 8, 2, {"SUBNORMAL": 1, "XVEC": 1, "WORDS": 4}
        split = max(1, min(steps, -(-waves * sms // -(-n // block_n))))
        if dtype == torch.bfloat16:  # the splits meet in bf16 atomics: 86 of them reached 1.1e-2 relative error (gpu_check)
            split = min(split, 64)
        return {
            "BLOCK_N": block_n,
            "BLOCK_K": block_k,
            "SPLIT_K": split,
            "num_warps": warps,
            "num_stages": 3,
            "FEW_SHIFTS": int(_few_shifts(bits)),
            **sub,
        }
    if m <= 16:
        # the weight tile built pair by pair in PTX (PAIRS) as the MMA's left operand (SWAP): 1.25-1.61x
        # over code-by-code tiles at M = 4..16 and faster than ROWS4 at M = 4 (kernels_pairs_sweep.md)
        block_n = 64
        tiles = -(-n // block_n)
        # ~8 waves of programs, but at least 4 K steps a split (the best of the sweep's grid in each 7B case)
        split = max(1, min(steps // 4, -(-8 * _sm_count(device) // tiles)))
        return {
            "BLOCK_M": 16,
            "BLOCK_N": block_n,
            "BLOCK_K": block_k,
            "SPLIT_K": split,
            "num_warps": 4,
            "num_stages": 3,
            "PAIRS": 1,
            "SWAP": 1,
        }
    block_k = 64 if group % 64 == 0 else group
    if m < DEQUANT_MIN_M:  # 64 x 128 tiles, 4 warps (best at M = 64 in 9 of 9 cases), ~4 waves (7 of 9): kernels_mid_m_sweep.md
        tiles = -(-n // 128) * -(-m // 64)
        split = max(1, min(k // block_k, -(-4 * _sm_count(device) // tiles)))
        pairs = int(bits == 3)  # PAIRS at 3 bits: 1.06-1.21x; 0.7-1.0x at 2/4 (kernels_pairs_sweep.md)
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": block_k, "SPLIT_K": split, "num_warps": 4, "num_stages": 3, "PAIRS": pairs}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k, "SPLIT_K": 1, "num_warps": 8, "num_stages": 3}


def reference_matmul(x: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """CPU/GPU fallback: dequantize and multiply (what QuantLinear uses without Triton)."""
    from amq_kernels.packing import dequantize

    return torch.nn.functional.linear(x, dequantize(packed, x.dtype))


def dequantize_triton(packed: PackedWeight, dtype: torch.dtype) -> torch.Tensor:
    """W^T (K, N) in `dtype`, dequantized on the GPU by one kernel."""
    widths = plane_widths(packed.bits)
    k, n = packed.in_features, packed.out_features
    w = torch.empty(k, n, device=packed.scales.device, dtype=dtype)
    block_k = min(packed.group_size, 64)
    grid = (triton.cdiv(n, 128), k // block_k)
    p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
    dequant_kernel[grid](
        packed.planes[0], p1, packed.scales, packed.zeros, w, n,
        GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0, BLOCK_K=block_k, BLOCK_N=128, **FUSE,
    )  # fmt: skip
    return w


def _ptx_ok(x: torch.Tensor, widths: list[int]) -> bool:
    """The decode kernels' fp16-pair PTX path: CUDA, 2/3/4 bits (not under the interpreter), x
    4-byte aligned (it is read as 32-bit pairs; a view can start at an odd element); bf16 inputs
    are converted to fp16 pairs in the kernel."""
    aligned = x.data_ptr() % 4 == 0
    return not _INTERPRETING and x.is_cuda and widths in ([4], [2], [2, 1]) and aligned


def _pairs_ptx_ok(x: torch.Tensor, widths: list[int]) -> bool:
    """The tiles' pair dequantization in PTX (PAIRS): CUDA, 2/3/4 bits, fp16 or bf16 (the bf16x2
    sub needs sm_90), not under the interpreter."""
    bf16_ok = x.dtype == torch.float16 or (x.is_cuda and torch.cuda.get_device_capability(x.device) >= (9, 0))
    return not _INTERPRETING and x.is_cuda and widths in ([4], [2], [2, 1]) and bf16_ok


_LOCKS: dict[torch.device, torch.Tensor] = {}


def _tile_locks(device: torch.device, tiles: int) -> torch.Tensor:
    """Per-tile arrival counters of the serial split-K reduction (`SERIAL`); every call leaves
    them at zero. One set per device: calls on concurrent streams must not share it."""
    if device not in _LOCKS or _LOCKS[device].numel() < tiles:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("call matmul once outside CUDA-graph capture first (allocates the split-K counters)")
        _LOCKS[device] = torch.zeros(max(tiles, 1 << 12), device=device, dtype=torch.int32)
    return _LOCKS[device]


def _split(k: int, block_k: int, split: int, group: int) -> int:
    """The K split actually launched: whole BLOCK_K steps, none empty."""
    if group % block_k or block_k % 32:
        raise ValueError(f"group size {group} must be a multiple of 32 and of BLOCK_K = {block_k}")
    steps = k // block_k
    return -(-steps // -(-steps // max(1, min(split, steps))))


def _reduction(cfg: dict[str, int], split: int) -> str:
    """How the K splits meet (`_epilogue`'s REDUCE), from a config's opt-in keys (popped)."""
    serial = bool(cfg.pop("SERIAL", 0))
    return "store" if split == 1 else "serial" if serial else "atomic"


def _outputs(x2: torch.Tensor, n: int, split: int, reduce: str, tiles: int, out: torch.Tensor | None):
    """(y, workspace, counters) for a launch whose `split` K splits meet by `reduce`: y is `out` (or new),
    zeroed only when the splits meet through atomics in it; the serial reduction's fp32 workspace."""
    m = x2.shape[0]
    atomic = reduce == "atomic"
    if atomic and not _atomic_16bit(x2.device):  # no 16-bit atomics: sum in fp32, cast after
        y = torch.zeros(m, n, device=x2.device, dtype=torch.float32)
    elif out is not None:
        y = out.zero_() if atomic else out
    else:
        y = (torch.zeros if atomic else torch.empty)(m, n, device=x2.device, dtype=x2.dtype)
    ws, lock = y, y
    if reduce == "serial":
        ws = torch.empty(split, m, n, device=x2.device, dtype=torch.float32)
        lock = _tile_locks(x2.device, tiles)
    return y, ws, lock


def _sub_words(words: int, block_k: int, w0: int) -> int:
    """SUBNORMAL's words of a column per fp16 accumulator (config WORDS), at most a K step's word rows."""
    words = min(words, max(1, block_k * w0 // 32))
    if words not in (1, 2, 4):
        raise ValueError(f"WORDS must be 1, 2 or 4, got {words}")
    return words


def _gemv(x2: torch.Tensor, packed: PackedWeight, widths: list[int], cfg: dict[str, int], out) -> torch.Tensor:
    """1 input row (`gemv_kernel`, grid (n tiles, k splits)) or up to 16 in 4-row programs
    (`gemv4_kernel`, grid (n tiles, 4-row tiles, k splits)); words unpacked in place."""
    m, k, n = x2.shape[0], packed.in_features, packed.out_features
    cfg = dict(cfg)
    block_n, block_k = cfg.pop("BLOCK_N"), cfg.pop("BLOCK_K")
    split = _split(k, block_k, cfg.pop("SPLIT_K"), packed.group_size)
    use_ptx = bool(cfg.pop("PTX", 1)) and _ptx_ok(x2, widths)
    few_shifts = bool(cfg.pop("FEW_SHIFTS", 0))
    guard = bool(cfg.pop("GUARD", 1))  # M = 1: splits with |x| >= 4096 scaled down (ROWS4 has no guard)
    sub = bool(cfg.pop("SUBNORMAL", 0)) and use_ptx and m == 1  # M = 1: pair_dot_sub_ptx (`_tiling`'s default)
    words = _sub_words(cfg.pop("WORDS", 1), block_k, widths[0])
    xvec = bool(cfg.pop("XVEC", 0)) and x2.data_ptr() % 16 == 0  # SUBNORMAL: inputs read 16 bytes at a time
    rows = 1 if m == 1 else 4
    for key in ("BLOCK_M", "ROWS4", "PAIRS", "SWAP"):
        cfg.pop(key, None)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, rows), split)
    reduce = _reduction(cfg, split)
    y, ws, lock = _outputs(x2, n, split, reduce, grid[0] * grid[1], out)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    src, args = pair_dot_sub_ptx(w0, w1, words) if sub else pair_dot_ptx(w0, w1, rows, few_shifts) if use_ptx else ("", "")
    p1 = packed.planes[1] if w1 else packed.planes[0]
    consts = dict(GROUP=packed.group_size, W0=w0, W1=w1, BLOCK_N=block_n, BLOCK_K=block_k, REDUCE=reduce,
                  PTX=use_ptx, PTX_SRC=src, PTX_ARGS=args, **cfg)  # fmt: skip
    if m == 1:
        gemv_kernel[grid[::2]](
            x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock, n, k, split, GUARD=guard, SUB=sub,
            OFFS=packed_offsets(w0, w1) if sub else 0, WORDS=words if sub else 1, XVEC=xvec and sub, **consts, **FUSE,
        )  # fmt: skip
    else:
        gemv4_kernel[grid](
            x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock, m, n, k, x2.stride(0), y.stride(0), split, **consts, **FUSE
        )
    return y


def matmul_group(
    x: torch.Tensor, packed: list[PackedWeight], num_warps: int | None = None, out: torch.Tensor | None = None, subnormal: bool = True
) -> torch.Tensor:
    """[x @ W_1^T, x @ W_2^T, ...] concatenated along the last dim, for 2 or 3 layers that read
    the same x (q/k/v, gate/up), each at its own bit-width. One input row (decode): one launch
    for all of them (`gemv_group_kernel`, the M = 1 loop `matmul` runs: SUBNORMAL with its tiles, or with
    `subnormal=False` the loop before it, 256-wide tiles of 4 warps: kernels_group.md); more rows: one
    `matmul` per layer. `out` (1, sum N) at one row, as for `matmul`."""
    if not 2 <= len(packed) <= 3:
        raise ValueError(f"matmul_group takes 2 or 3 layers, got {len(packed)}")
    k, group = packed[0].in_features, packed[0].group_size
    if any(p.in_features != k or p.group_size != group for p in packed):
        raise ValueError("matmul_group: the layers must share in_features and group_size")
    if x.shape[-1] != k or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be (..., {k}) fp16/bf16, got {tuple(x.shape)} {x.dtype}")
    lead, ns = x.shape[:-1], [p.out_features for p in packed]
    x2 = x.reshape(-1, k)
    if triton is None or x2.shape[0] != 1:
        return torch.cat([matmul(x2, p) for p in packed], dim=-1).reshape(*lead, sum(ns))
    widths = [plane_widths(p.bits) for p in packed]
    if any(len(w) > 2 or w[0] > 4 for w in widths):
        raise ValueError(f"the kernel takes 1-4 bit weights, got {[p.bits for p in packed]}")
    x2 = x2.contiguous()
    use_ptx = all(_ptx_ok(x2, w) for w in widths)
    sub = subnormal and use_ptx and all(_subnormal_default(p.bits, x.dtype) for p in packed)  # where matmul would run it for each
    block_k = min(group, 128)
    if sub:  # the tiles `matmul` takes for all the group's outputs as one layer
        tile = _tiling(1, sum(ns), k, max(p.bits for p in packed), group, x.device, x.dtype)
        block_n, warps = tile["BLOCK_N"], num_warps or tile["num_warps"]
        tiles = sum(-(-n // block_n) for n in ns)
        split = _split(k, block_k, tile["SPLIT_K"], group)
    else:  # 256-wide tiles, ~4 waves (kernels_group.md)
        block_n, warps = 256, num_warps or 4
        tiles = sum(-(-n // block_n) for n in ns)
        split = _split(k, block_k, max(1, -(-4 * _sm_count(x.device) // tiles)), group)
    words = tile.get("WORDS", 1) if sub else 1
    if out is not None and (out.shape != (1, sum(ns)) or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous (1, {sum(ns)}) {x.dtype} tensor")
    reduce = _reduction({}, split)
    y, _, _ = _outputs(x2, sum(ns), split, reduce, tiles, out)
    segs = [(w[0], w[1] if len(w) > 1 else 0) for w in widths]
    args, consts = [], {}
    for name, p, (w0, w1) in zip("ABC", [*packed, packed[0]], [*segs, (0, 0)], strict=False):  # C = A, unused, for 2
        args += [p.planes[0], p.planes[1] if w1 else p.planes[0], p.scales, p.zeros]
        words_w = _sub_words(words, block_k, w0)
        if not use_ptx or not w0:
            src, cons = "", ""
        elif sub:
            src, cons = pair_dot_sub_ptx(w0, w1, words_w)
        else:
            src, cons = pair_dot_ptx(w0, w1, few_shifts=_few_shifts(p.bits))
        consts.update({f"W{name}0": w0, f"W{name}1": w1, f"SRC_{name}": src, f"ARGS_{name}": cons})
        consts.update({f"OFFS_{name}": packed_offsets(w0, w1) if sub and w0 else 0, f"WORDS_{name}": words_w})
    gemv_group_kernel[(tiles, split)](
        x2, *args, y, *ns, *([0] if len(ns) == 2 else []), k, split,
        GROUP=group, BLOCK_N=block_n, BLOCK_K=block_k, REDUCE=reduce, PTX=use_ptx, GUARD=True,
        SUB=sub, XVEC=sub and x2.data_ptr() % 16 == 0, num_warps=warps, num_stages=3, **consts, **FUSE,
    )  # fmt: skip
    if out is not None and y is not out:  # the fp32 atomics buffer
        y = out.copy_(y)
    return y.to(x.dtype).reshape(*lead, sum(ns))


# The keys a `matmul` config may hold (sweeps and tests pass their own; `_tiling` makes the defaults)
_CONFIG_KEYS = {
    "BLOCK_M",
    "BLOCK_N",
    "BLOCK_K",
    "SPLIT_K",
    "num_warps",
    "num_stages",
    "SERIAL",
    "PTX",
    "FEW_SHIFTS",
    "ROWS4",
    "DEQUANT",
    "PAIRS",
    "SWAP",
    "GUARD",
    "SUBNORMAL",
    "WORDS",
    "XVEC",
}


def _check_config(config: dict[str, int], m: int) -> None:
    """A clear error for a config with a misspelt or missing key, instead of one from inside Triton."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown matmul config keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    if config.get("DEQUANT"):
        return
    need = {"BLOCK_N", "BLOCK_K", "SPLIT_K"} | ({"BLOCK_M"} if m > 1 and not config.get("ROWS4") else set())
    if need - set(config):
        raise ValueError(f"matmul config lacks {sorted(need - set(config))} (M = {m}); got {config}")


def matmul(x: torch.Tensor, packed: PackedWeight, config: dict[str, int] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) fp16/bf16 -> (..., N), with W from `packed`; picks the decode or fused tiling,
    or for M >= DEQUANT_MIN_M dequantizes once and uses cuBLAS (`config` overrides the choice,
    for tuning sweeps; `{"DEQUANT": 1}` forces the last). `out` (M, N) contiguous, x's dtype:
    written in place (every element is written; it is zeroed first only on the atomics path)."""
    if triton is None:
        return reference_matmul(x, packed)
    if x.shape[-1] != packed.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the layer takes {packed.in_features}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"activations must be fp16 or bf16, got {x.dtype}")
    widths = plane_widths(packed.bits)
    if len(widths) > 2 or widths[0] > 4:
        raise ValueError(f"the kernel takes 1-4 bit weights, got {packed.bits}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, packed.in_features).contiguous()
    m, k, n = x2.shape[0], packed.in_features, packed.out_features
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device):
        raise ValueError(f"out must be a contiguous ({m}, {n}) {x.dtype} tensor on {x.device}, got {tuple(out.shape)} {out.dtype}")
    if config is not None:
        _check_config(config, m)
    if (config or {}).get("DEQUANT") or (config is None and m >= DEQUANT_MIN_M):
        w = dequantize_triton(packed, x.dtype)
        return (torch.mm(x2, w, out=out) if out is not None else x2 @ w).reshape(*lead, n)
    cfg: dict[str, Any] = config or _tiling(m, n, k, packed.bits, packed.group_size, x.device, x.dtype)
    if m == 1 or cfg.get("ROWS4"):
        y = _gemv(x2, packed, widths, cfg, out)
    else:
        cfg = dict(cfg)
        cfg.pop("FEW_SHIFTS", None)  # decode-kernel options
        for key in ("SUBNORMAL", "WORDS", "XVEC"):
            cfg.pop(key, None)
        split = _split(k, cfg["BLOCK_K"], cfg.pop("SPLIT_K"), packed.group_size)
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(m, cfg["BLOCK_M"]), split)
        reduce = _reduction(cfg, split)
        y, ws, lock = _outputs(x2, n, split, reduce, grid[0] * grid[1], out)
        p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
        pairs = bool(cfg.pop("PAIRS", 0)) and widths in ([4], [2], [2, 1])  # opt-in: tiles built pair by pair
        use_ptx = pairs and _pairs_ptx_ok(x2, widths)
        src, args = pair_dequant_ptx(widths[0], widths[1] if len(widths) > 1 else 0, x.dtype == torch.bfloat16) if use_ptx else ("", "")
        cfg.update(PAIRS=pairs, PTX=use_ptx, PTX_SRC=src, PTX_ARGS=args, SWAP=bool(cfg.pop("SWAP", 0)))
        packed_matmul_kernel[grid](
            x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock,
            m, n, k, x2.stride(0), y.stride(0), SPLIT_K=split, REDUCE=reduce,
            GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0,
            DOT_FP32=_INTERPRETING and x.dtype == torch.bfloat16, **cfg, **FUSE,
        )  # fmt: skip
    if out is not None and y is not out:  # the fp32 atomics buffer
        y = out.copy_(y)
    return y.to(x.dtype).reshape(*lead, n)
