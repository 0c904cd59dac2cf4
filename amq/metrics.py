"""Divergence of a quantized model's next-token distribution from the full-precision one.

Reference log-probabilities are computed once per run and kept on the model's device, so a plan
costs one forward pass and no host-device copy. The score is the mean over every calibration
token of JSD(p_ref, q) (bounded, symmetric; AMQ's choice) or KL(p_ref || q).
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
