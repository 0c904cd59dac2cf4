"""Zero-shot accuracy through EleutherAI's lm-eval harness, on our model object (QuantLinear
layers included): no re-loading from disk, so what is measured is exactly what was quantized.

Standard tasks (arc_easy, arc_challenge, piqa, hellaswag, winogrande, boolq) come from the hub
through `datasets`; offline, `include_path` adds local task YAMLs (a json/jsonl dataset).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from amq.config import AMQConfigError

PAPER_TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "winogrande", "boolq")


def zero_shot(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[str] = PAPER_TASKS,
    batch_size: int = 8,
    limit: int | None = None,
    include_path: str | None = None,
) -> dict[str, dict[str, float]]:
    """task -> {"acc": ..., "acc_norm": ... (where the task defines it)}, 0-shot."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise AMQConfigError("zero-shot tasks need lm-eval (pip install 'amq[eval]')") from None
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise AMQConfigError(f"unknown lm-eval task(s): {', '.join(unknown)}")
    res = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=0, limit=limit, task_manager=manager, log_samples=False)
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        metrics = res["results"][task]
        out[task] = {k.split(",")[0]: float(v) for k, v in metrics.items() if k.split(",")[0] in ("acc", "acc_norm")}
    return out
