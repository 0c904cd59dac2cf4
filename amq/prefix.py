"""Run a model from decoder block b on, on the full-precision hidden states cached at b's input.

A change confined to blocks >= b leaves every earlier block's output as it was, so a score of
such a change needs only blocks b.. (and the head): on average half the forward of a
sensitivity pass, where every layer is changed alone in block order. The model runs as it is
(its embedding, masks, position embeddings, final norm and head); only the decoder block list is
cut to [b:], and block b's hidden input is swapped for the cached one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from amq.models import decoder_blocks


class _Stop(Exception):
    pass


def _swap_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class BlockPrefix:
    """Cached full-precision inputs of one decoder block (per batch), advanced block by block."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor]) -> None:
        self.model = model
        self.blocks = decoder_blocks(model)
        path = next(n for n, m in model.named_modules() if m is self.blocks)
        parent, _, self.attr = path.rpartition(".")
        self.parent = model.get_submodule(parent) if parent else model
        self.batches = batches
        self.block = 0
        self.hidden: list[torch.Tensor] | None = None  # block `self.block`'s input per batch; None: not captured yet

    @contextlib.contextmanager
    def _from(self, start: int, hidden: torch.Tensor | None, stop_at: int | None = None) -> Iterator[list[torch.Tensor]]:
        """The model with blocks [start:], block `start` fed `hidden` (None: the model's own);
        with `stop_at`, the forward stops at that block and yields its input."""
        captured: list[torch.Tensor] = []
        handles = []
        if hidden is not None:
            handles.append(self.blocks[start].register_forward_pre_hook(lambda m, a, k: _swap_hidden(a, k, hidden), with_kwargs=True))
        if stop_at is not None:

            def grab(m, a, k):
                captured.append(_hidden_of(a, k))
                raise _Stop

            handles.append(self.blocks[stop_at].register_forward_pre_hook(grab, with_kwargs=True))
        setattr(self.parent, self.attr, nn.ModuleList(list(self.blocks)[start:]))
        try:
            yield captured
        finally:
            setattr(self.parent, self.attr, self.blocks)
            for h in handles:
                h.remove()

    @torch.inference_mode()
    def advance(self, block: int) -> None:
        """Make the cache hold block `block`'s input. Blocks before it must be at full precision now."""
        if self.hidden is not None and block < self.block:
            self.hidden, self.block = None, 0  # backwards: capture again from the embedding
        start = self.block if self.hidden is not None else 0
        if self.hidden is not None and start == block:
            return
        out = []
        for i, batch in enumerate(self.batches):
            fed = self.hidden[i] if self.hidden is not None else None
            with self._from(start, fed, stop_at=block) as captured, contextlib.suppress(_Stop):
                self.model(input_ids=batch, use_cache=False)
            out.append(captured[0])
        self.hidden, self.block = out, block

    def logits(self, i: int) -> torch.Tensor:
        """Batch i's logits, blocks [self.block:] run on the cached input."""
        assert self.hidden is not None
        with self._from(self.block, self.hidden[i]):
            return self.model(input_ids=self.batches[i], use_cache=False).logits
