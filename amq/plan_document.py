"""A plan: the bit-width of every searchable layer, and what it was made for.

One typed, versioned document, written and read here only: the search's `pareto.json` and
`plans/*.json`, `python -m amq.plan`, `python -m amq.evaluate plan.source=file`, W&B and every
export carry the same object. Its JSON schema is `PlanDocument.model_json_schema()`
(`python -m amq.plan --schema` prints it). Format 1 files (amq before the document had a
class) are read and upgraded; a newer format is refused with the version it needs.

Applying a plan checks it against what it is applied to (`bits_for`): a plan made at another
group size, for other layer names or for a model of other shapes is a one-line error naming
the field, never a silent mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from amq.config import AMQConfigError

PLAN_FORMAT = 2
PLAN_FILE = "amq_plan.json"  # the plan an export was quantized to, beside its weights


class PlanBudget(BaseModel):
    """The target a plan was chosen for: memory (bits, gb: `bytes` the cap) or speed (us: our GEMMs'
    microseconds a decode step; tok_s: tokens a second; `step_us` the plan's GEMM time by the latency table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: float
    unit: Literal["bits", "gb", "us", "tok_s"]
    bytes: int | None = None
    step_us: float | None = None
    device: str | None = None  # speed budgets: the GPU the latency table was measured on


class PlanDocument(BaseModel):
    """Per-layer bits and the facts needed to apply, compare and trust them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = PLAN_FORMAT
    model: str  # path or hub id it was searched on
    model_fingerprint: str | None = None  # architecture and shapes (amq.models.model_fingerprint)
    layers: dict[str, int]  # layer name -> bits, in the model's order
    group_size: int
    choices: list[int]
    source: str  # what made it: search | ilp | greedy | uniform | amq.plan:<archive|ilp|repair>
    avg_bits: float
    bytes: int
    model_gb: float
    divergence: float | None = None  # measured by the search's metric on its calibration windows
    predicted_divergence: float | None = None
    search: dict[str, Any] = {}  # proxy, metric, metric_context, tie: what the divergence was measured with
    budget: PlanBudget | None = None
    chosen_by: dict[str, Any] | None = None  # the final re-rank: quantizer, competitors, divergence

    @model_validator(mode="after")
    def _bits_in_choices(self) -> PlanDocument:
        odd = sorted({b for b in self.layers.values() if b not in self.choices})
        if odd:
            raise ValueError(f"layers use {odd} bits, not in choices {self.choices}")
        if self.format > PLAN_FORMAT:
            raise ValueError(f"format {self.format} is newer than this amq reads ({PLAN_FORMAT}); upgrade amq")
        return self

    # --- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, doc: Any, where: str) -> PlanDocument:
        """Validate `doc` (format 1 upgraded); any fault is one line naming `where` and the field."""
        if not isinstance(doc, dict):
            raise AMQConfigError(f"{where}: not a plan document (a JSON object with layers, group_size, ...)")
        if "format" not in doc and "version" in doc:
            doc = _upgrade_format_1(doc)
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            message = str(err.get("ctx", {}).get("error", err["msg"]))  # a validator's own words without "Value error, "
            raise AMQConfigError(f"{where}: not a valid plan document: {field + ': ' if field else ''}{message}") from None

    def save(self, path: Path) -> None:
        from amq.rundir import write_json_atomic

        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> PlanDocument:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AMQConfigError(f"{p}: no such plan file")
        try:
            doc = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AMQConfigError(f"{p}: not JSON ({exc})") from None
        return cls.from_json(doc, str(p))

    # --- applying ---------------------------------------------------------------------------
    def bits_for(self, names: list[str], group_size: int, fingerprint: str | None = None, where: str = "the plan") -> dict[str, int]:
        """layer -> bits for a model with searchable layers `names`, quantized at `group_size`."""
        if self.group_size != group_size:
            raise AMQConfigError(
                f"{where}: group_size is {self.group_size}, but the quantizer uses {group_size}; "
                f"set quantizer.group_size={self.group_size} or search again"
            )
        missing, unknown = [n for n in names if n not in self.layers], [n for n in self.layers if n not in set(names)]
        if missing or unknown:
            raise AMQConfigError(
                f"{where}: layers do not match the model's searchable layers "
                f"(missing {missing[:2]}, unknown {unknown[:2]}); it was made for {self.model}"
            )
        if fingerprint and self.model_fingerprint and fingerprint != self.model_fingerprint:
            raise AMQConfigError(f"{where}: model_fingerprint differs: it was made for {self.model}, a model of other shapes")
        return {n: self.layers[n] for n in names}


def _upgrade_format_1(doc: dict) -> dict:
    """A format 1 plan (flat settings, `version`, `from` for amq.plan's pick) as format 2."""
    out = {k: v for k, v in doc.items() if k in PlanDocument.model_fields}
    out["format"] = PLAN_FORMAT
    out["source"] = (
        f"amq.plan:{doc['from']}" if "from" in doc else ("+".join(doc["chosen_by"]["sources"]) if "chosen_by" in doc else "search")
    )
    out["search"] = {k: doc[k] for k in ("proxy", "metric", "metric_context", "tie") if k in doc}
    return out


def schema_json() -> str:
    return json.dumps(PlanDocument.model_json_schema(), indent=1)
