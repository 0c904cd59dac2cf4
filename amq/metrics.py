"""Divergence of a quantized model's next-token distribution from the full-precision one.

Reference log-probabilities are computed once per run and kept on the model's device, so a plan
costs one forward pass and no host-device copy. The score is the mean over every calibration
token of JSD(p_ref, q) (bounded, symmetric; AMQ's choice) or KL(p_ref || q).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from amq.prefix import BlockPrefix


def jsd(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Per-token Jensen-Shannon divergence (nats) between two log-prob tensors (..., vocab)."""
    log_m = torch.logaddexp(ref_logp, logp) - math.log(2.0)
    kl_pm = (ref_logp.exp() * (ref_logp - log_m)).sum(-1)
    kl_qm = (logp.exp() * (logp - log_m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def kl(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(p_ref || q) in nats."""
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


DIVERGENCES = {"jsd": jsd, "kl": kl}


class DivergenceEvaluator:
    """Scores the model as it currently is against cached full-precision outputs."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, batch_size: int, metric: str = "jsd") -> None:
        if metric not in DIVERGENCES:
            raise ValueError(f"unknown metric {metric!r}")
        self.model = model
        self.device = next(model.parameters()).device
        self.batches = [b.to(self.device) for b in input_ids.split(batch_size)]
        self.divergence = DIVERGENCES[metric]
        # log-probs are stored in the model's 16-bit dtype on GPU (half the memory), fp32 on CPU
        self.store_dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        self.reference = [self._logp(b).to(self.store_dtype) for b in self.batches]
        self.prefix: BlockPrefix | None = None  # made on the first score_from

    @torch.inference_mode()
    def score_from(self, block: int) -> float:
        """`score()` when the model differs from full precision only in blocks >= `block`: those
        blocks run on cached full-precision inputs (amq.prefix), the same numbers for less work."""
        from amq.prefix import BlockPrefix

        if self.prefix is None:
            self.prefix = BlockPrefix(self.model, self.batches)
        self.prefix.advance(block)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        count = 0
        for i, ref in enumerate(self.reference):
            d = self.divergence(ref.float(), torch.log_softmax(self.prefix.logits(i).float(), dim=-1))
            total += d.sum(dtype=torch.float64)
            count += d.numel()
        return float(total.item() / count)

    def first(self, n_samples: int) -> DivergenceEvaluator:
        """The same evaluator on the first `n_samples` calibration windows (views of these
        batches and references: nothing recomputed or copied)."""
        sub = object.__new__(DivergenceEvaluator)
        sub.model, sub.device, sub.divergence, sub.store_dtype, sub.prefix = (
            self.model,
            self.device,
            self.divergence,
            self.store_dtype,
            None,
        )
        sub.batches, sub.reference = [], []
        left = n_samples
        for batch, ref in zip(self.batches, self.reference, strict=True):
            if left <= 0:
                break
            sub.batches.append(batch[:left])
            sub.reference.append(ref[:left])
            left -= batch.shape[0]
        return sub

    def drop_prefix(self) -> None:
        """Free the cached block inputs (one block's activations for the whole calibration set)."""
        self.prefix = None

    @torch.inference_mode()
    def _logp(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=batch, use_cache=False).logits
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def score(self) -> float:
        """Mean per-token divergence of the current model from the reference."""
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        count = 0
        for batch, ref in zip(self.batches, self.reference, strict=True):
            d = self.divergence(ref.float(), self._logp(batch))
            total += d.sum(dtype=torch.float64)
            count += d.numel()
        return float(total.item() / count)


@torch.inference_mode()
def compare_to_reference(
    model: nn.Module,
    reference: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 1,
) -> dict[str, float]:
    """What users compare quantized models by, against the 16-bit model on the same windows
    (n, seq_len): mean per-token KL(p16 || q) and JSD (nats), and the same-top-token rate
    (how often the argmax next token is unchanged)."""
    device = next(model.parameters()).device
    ref_device = next(reference.parameters()).device
    sums = {"kl": 0.0, "jsd": 0.0, "same_top_token": 0.0}
    count = 0
    for batch in windows.split(batch_size):
        ref_logp = torch.log_softmax(reference(input_ids=batch.to(ref_device), use_cache=False).logits.float(), -1).to(device)
        logp = torch.log_softmax(model(input_ids=batch.to(device), use_cache=False).logits.float(), -1)
        sums["kl"] += float(kl(ref_logp, logp).sum(dtype=torch.float64))
        sums["jsd"] += float(jsd(ref_logp, logp).sum(dtype=torch.float64))
        sums["same_top_token"] += float((ref_logp.argmax(-1) == logp.argmax(-1)).sum())
        count += batch.numel()
    return {k: v / count for k, v in sums.items()}
