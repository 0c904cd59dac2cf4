"""Calibration sequences: random windows of tokenized text, reproducible from a seed."""

from __future__ import annotations

from pathlib import Path

import torch

from amq.config import AMQConfigError, DataConfig


def check_data(cfg: DataConfig) -> None:
    """Cheap checks done before any heavy work."""
    if cfg.name == "text":
        p = Path(str(cfg.path)).expanduser()
        if not p.is_file():
            raise AMQConfigError(f"data.path {cfg.path!r}: no such file")
    if cfg.name in ("wikitext2", "c4"):
        import importlib.util

        if importlib.util.find_spec("datasets") is None:
            raise AMQConfigError(
                f"data={cfg.name} needs the `datasets` package (pip install 'amq[data]'); offline, use data=text data.path=<file>"
            )


def load_text(cfg: DataConfig, split: str = "train") -> str:
    """The raw text of the configured source."""
    if cfg.name == "builtin":
        from amq.tiny import builtin_corpus

        return builtin_corpus()[1]
    if cfg.name == "text":
        return Path(str(cfg.path)).expanduser().read_text(encoding="utf-8", errors="replace")
    try:
        import datasets
    except ImportError:
        raise AMQConfigError(
            f"data={cfg.name} needs the `datasets` package (pip install 'amq[data]'); offline, use data=text data.path=<file>"
        ) from None
    try:
        if cfg.name == "wikitext2":
            ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
            return "\n\n".join(ds["text"])
        shard = "en/c4-train.00000-of-01024.json.gz" if split == "train" else "en/c4-validation.00000-of-00008.json.gz"
        ds = datasets.load_dataset("allenai/c4", data_files={split: shard}, split=split)
        return "\n\n".join(ds["text"][:20000])
    except Exception as exc:
        raise AMQConfigError(
            f"data={cfg.name}: could not load from the hub ({str(exc).splitlines()[0][:120]}); offline, use data=text data.path=<file>"
        ) from None


def calibration_ids(cfg: DataConfig, tokenizer) -> torch.Tensor:
    """(num_samples, seq_len) token ids: windows at seeded random offsets of the text."""
    text = load_text(cfg)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if len(ids) <= cfg.seq_len:
        raise AMQConfigError(f"calibration text has {len(ids)} tokens, fewer than data.seq_len={cfg.seq_len}")
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = torch.randint(0, len(ids) - cfg.seq_len, (cfg.num_samples,), generator=gen)
    return torch.stack([ids[s : s + cfg.seq_len] for s in starts.tolist()])
