"""Perplexity by the standard protocol (GPTQ/AWQ papers): the whole test split joined into one
token stream, cut into non-overlapping windows of the context length, every window scored in
full, perplexity = exp(mean next-token NLL over all scored tokens). A trailing partial window
is dropped, as in the reference scripts."""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm import tqdm

from amq.config import AMQConfigError


def token_stream(text: str, tokenizer) -> torch.Tensor:
    """The test text joined and tokenized once (no special tokens between documents)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    seq_len: int = 2048,
    batch_size: int = 1,
    max_windows: int | None = None,
    desc: str = "perplexity",
    show_progress: bool = True,
) -> tuple[float, int]:
    """(perplexity, number of windows) of `model` on the 1-D token stream `ids`."""
    n_windows = ids.numel() // seq_len
    if n_windows == 0:
        raise AMQConfigError(f"the test text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    device = next(model.parameters()).device
    windows = ids[: n_windows * seq_len].view(n_windows, seq_len)
    nll, count = 0.0, 0
    for batch in tqdm(windows.split(batch_size), desc=desc, unit="batch", disable=not show_progress, leave=False):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        nll += float(loss)
        count += batch[:, 1:].numel()
    return math.exp(nll / count), n_windows
