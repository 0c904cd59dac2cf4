"""The embedded models: a tiny Llama (the default) and a tiny Qwen2, trained here on text that ships with Python.

`python -m amq.run` must work on a fresh machine with no download. We train a small
LlamaForCausalLM (and a byte-level BPE tokenizer) on the documentation topics that CPython
ships in `pydoc_data`, save it in Hugging Face format and cache it, so later runs load it in
seconds. Training text and calibration text are disjoint slices of that corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class TinyRecipe:
    """Architecture and training settings; part of the cache key."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 500  # 700 before 2026-12-02: held-out loss was lowest near step 450 and rose after (memorizing); 500 ends lower
    lr: float = 3e-3
    seed: int = 0
    version: int = 1
    arch: str = "llama"  # llama | qwen2 (grouped-query attention, biases on q/k/v)
    num_kv_heads: int | None = None  # None: as many as attention heads

    def key(self) -> str:
        fields = asdict(self)
        for k in ("arch", "num_kv_heads"):  # added later: left out at their defaults, so older caches stay valid
            if fields[k] == getattr(TinyRecipe, k):
                del fields[k]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


# the embedded models: `builtin:<name>`; the Llama is the default, the Qwen2 a second family for tests and benchmarks
BUILTIN_RECIPES = {"tiny-llama": TinyRecipe(), "tiny-qwen2": TinyRecipe(arch="qwen2", num_kv_heads=2, steps=700)}  # (its benchmarks' model)


def builtin_corpus() -> tuple[str, str]:
    """Python's bundled documentation topics, split into (train, held-out) text."""
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    cut = int(len(docs) * 0.9)
    return "\n\n".join(docs[:cut]), "\n\n".join(docs[cut:])


def cache_root() -> Path:
    """Where built artifacts live: $AMQ_CACHE_DIR, else ~/.cache/amq."""
    return Path(os.environ.get("AMQ_CACHE_DIR", Path.home() / ".cache" / "amq"))


def _train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def build_tiny_model(
    out_dir: Path,
    recipe: TinyRecipe = TinyRecipe(),
    train_text: str | None = None,
    tokenizer=None,
    device: str = "cpu",
    eval_text: str | None = None,
    eval_every: int = 50,
) -> Path:
    """Train the tiny model and save it (HF format, fp16) to `out_dir`; returns `out_dir`.

    By default on Python's bundled docs with a tokenizer trained on them; benchmarks pass their
    own text and tokenizer (then `recipe.vocab_size` is the tokenizer's) and may train on a GPU.
    With `eval_text`, the loss on it is measured every `eval_every` steps and the weights with the
    lowest one are saved (early stopping: a small text is otherwise memorized)."""
    torch.manual_seed(recipe.seed)
    if train_text is None:
        train_text, _ = builtin_corpus()
    if tokenizer is None:
        tokenizer = _train_tokenizer(train_text, recipe.vocab_size)
    ids = torch.tensor(tokenizer(train_text)["input_ids"], dtype=torch.long)

    model = _fresh_model(recipe, tokenizer).to(device)
    held_out = None
    if eval_text is not None:
        eval_ids = torch.tensor(tokenizer(eval_text)["input_ids"], dtype=torch.long)
        n = min(64, len(eval_ids) // (recipe.seq_len + 1))
        held_out = eval_ids[: n * recipe.seq_len].view(n, recipe.seq_len).to(device)
    _train(model, ids, recipe, device, held_out, eval_every)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu", torch.float16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "amq_recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    return out_dir


def _fresh_model(recipe: TinyRecipe, tokenizer):
    """The recipe's architecture (Llama or Qwen2), randomly initialised from torch's global generator."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[recipe.arch]
    config = config_cls(
        vocab_size=recipe.vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads or recipe.num_heads,
        max_position_embeddings=recipe.seq_len * 4,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model_cls(config)


def _train(model, ids: torch.Tensor, recipe: TinyRecipe, device: str, held_out: torch.Tensor | None, eval_every: int) -> None:
    """AdamW with warm-up and cosine decay on random windows of `ids`; with `held_out`, the weights
    of the lowest held-out loss are kept (early stopping)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, fused=True)  # one kernel per step, CPU and GPU
    warmup = max(1, recipe.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))

    best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.inf, -1, None)  # held-out loss, step, weights
    gen = torch.Generator().manual_seed(recipe.seed)
    bar = tqdm(range(recipe.steps), desc="train tiny model", unit="step")
    t0 = time.perf_counter()
    for step in bar:
        starts = torch.randint(0, len(ids) - recipe.seq_len - 1, (recipe.batch_size,), generator=gen)
        batch = torch.stack([ids[s : s + recipe.seq_len] for s in starts.tolist()]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if held_out is not None and ((step + 1) % eval_every == 0 or step + 1 == recipe.steps):
            val = _held_out_loss(model, held_out)
            if val < best[0]:
                best = (val, step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
            log.info("step %d: train loss %.3f, held-out loss %.3f (best %.3f at step %d)", step + 1, loss.item(), val, best[0], best[1])
    log.info("trained tiny model in %.1fs, final loss %.3f", time.perf_counter() - t0, loss.item())
    if best[2] is not None:
        model.load_state_dict(best[2])
        log.info("kept the weights of step %d (held-out loss %.3f)", best[1], best[0])


@torch.no_grad()
def _held_out_loss(model, windows: torch.Tensor) -> float:
    model.eval()
    losses = [model(input_ids=w, labels=w).loss.item() for w in windows.split(16)]
    model.train()
    return sum(losses) / len(losses)


def resolve_builtin(path: str) -> Path:
    """Map `builtin:<name>` (tiny-llama, tiny-qwen2) to its cached directory, building it there on
    first use (one process builds, others wait for it)."""
    from filelock import FileLock, Timeout

    name = path[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_RECIPES:
        known = ", ".join(f"'builtin:{k}'" for k in BUILTIN_RECIPES)
        raise ValueError(f"unknown builtin model {name!r}; the embedded ones are {known}")
    recipe = BUILTIN_RECIPES[name]
    target = cache_root() / f"{name}-{recipe.key()}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another process is building %s; waiting for it (%s)", name, lock.lock_file)
        lock.acquire()
    try:
        if (target / "config.json").exists():  # built by the process we waited for
            return target
        log.info("building the embedded model %s once into %s", name, target)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        build_tiny_model(tmp, recipe)
        os.replace(tmp, target)
        return target
    finally:
        lock.release()
