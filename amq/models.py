"""Loading a causal LM and finding the linear layers of its decoder blocks.

The searchable layers are every `nn.Linear` inside the decoder's block list (Llama, Qwen2,
Mistral and most HF causal LMs keep it at `model.layers`); embeddings, norms and `lm_head`
stay in 16-bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from amq.config import AMQConfigError, ModelConfig
from amq.tiny import BUILTIN_PREFIX, resolve_builtin

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class LayerInfo:
    """One searchable linear layer: its qualified name and weight shape (out, in)."""

    name: str
    out_features: int
    in_features: int

    @property
    def numel(self) -> int:
        return self.out_features * self.in_features


def resolve_model_path(path: str) -> str:
    """Return a loadable path or hub id; refuse a missing local path with one clear line."""
    if path.startswith(BUILTIN_PREFIX):
        try:
            return str(resolve_builtin(path))
        except ValueError as exc:
            raise AMQConfigError(str(exc)) from None
    p = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or p.exists() or path.count("/") != 1
    if looks_local:
        if not (p / "config.json").exists():
            raise AMQConfigError(f"model.path {path!r}: no such model directory (expected a config.json in it)")
        return str(p)
    return path  # a Hugging Face id: org/name


def model_fingerprint(hf_config) -> str:
    """What identifies a model's architecture and shapes for a worker's check against the
    driver's: its HF config, less where it was loaded from and by which transformers."""
    import hashlib
    import json

    doc = {k: v for k, v in hf_config.to_dict().items() if k not in ("_name_or_path", "transformers_version", "name_or_path")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_config(path: str, trust_remote_code: bool = False):
    """The model's HF config only (cheap): shapes are known before any weight is read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise AMQConfigError(f"model.path {path!r}: cannot load its config ({str(exc).splitlines()[0]})") from None


def shapes_from_config(hf_config, trust_remote_code: bool = False) -> tuple[list[LayerInfo], int]:
    """Searchable layers and total parameter count of a model built on the meta device:
    no memory, no weights read."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    return layer_infos(model), sum(p.numel() for p in model.parameters())


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks: `model.layers` in Llama/Qwen2/Mistral, found generically."""
    for name in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        mod: nn.Module | None = model
        for part in name.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if isinstance(mod, nn.ModuleList):
            return mod
    biggest = max((m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    if biggest is None:
        raise AMQConfigError(f"{type(model).__name__}: no list of decoder blocks found")
    return biggest


def layer_blocks(model: nn.Module, names: list[str]) -> list[int]:
    """The decoder block index of each named searchable layer."""
    blocks = decoder_blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    return [int(n.removeprefix(prefix + ".").split(".", 1)[0]) for n in names]


def searchable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Qualified name -> nn.Linear for every linear layer inside the decoder blocks, in order."""
    blocks = decoder_blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    out: dict[str, nn.Linear] = {}
    for name, mod in model.named_modules():
        if name.startswith(prefix + ".") and isinstance(mod, nn.Linear):
            out[name] = mod
    return out


# Sibling linears that read the same input, in the order a Llama-style block calls them
SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def shared_input_groups(model: nn.Module) -> list[list[str]]:
    """Qualified names of the sibling linears that read the same input (q/k/v, gate/up), per
    block: the decode path runs each group in one kernel launch (`group_shared_inputs`)."""
    blocks = decoder_blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    groups = []
    for parent, mod in model.named_modules():
        if not parent.startswith(prefix + "."):
            continue
        children = dict(mod.named_children())
        for siblings in SHARED_INPUTS:
            group = [f"{parent}.{s}" for s in siblings if s in children]
            if len(group) > 1:
                groups.append(group)
    return groups


def layer_infos(model: nn.Module) -> list[LayerInfo]:
    return [LayerInfo(n, m.out_features, m.in_features) for n, m in searchable_linears(model).items()]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(cfg: ModelConfig, path: str) -> PreTrainedModel:
    """Load the causal LM in its reference dtype on its device, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = pick_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # fp16 matmuls on CPU are slow and not more faithful
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    model.to(device).eval()  # type: ignore[arg-type]  # (transformers' typing of `to`)
    model.requires_grad_(False)
    log.info("loaded %s (%s, %s)", path, dtype, device)
    return model


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
