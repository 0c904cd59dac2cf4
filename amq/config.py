"""Typed schemas of every config group; Hydra validates the YAML in `conf/` against them.

Each dataclass checks its own values in `__post_init__`, so a bad value is refused with one
clear line when the config is turned into objects, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class AMQConfigError(ValueError):
    """A user-facing configuration or input error: printed as one line, exit code 2."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise AMQConfigError(message)


QUANT_METHODS = ("gptq", "awq", "hqq", "rtn")
# bit-widths every path takes: the quantizers, the packed format and kernels, and every export (tests cover each)
SUPPORTED_BITS = (2, 3, 4, 8)


def model_name_from_path(path: str) -> str:
    """A model's name from where it lives: `builtin:tiny-llama` -> tiny-llama, a directory or a hub id -> its last part."""
    from pathlib import PurePath

    if path.startswith("builtin:"):
        return path[len("builtin:") :]
    return PurePath(str(path).rstrip("/")).name or str(path)


def storage_kind(url: str) -> str:
    """journal (an Optuna journal file: a path ending in .journal) | rdb (an SQLAlchemy URL); else AMQConfigError."""
    if url.endswith(".journal") and "://" not in url:
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    _check(
        scheme in ("sqlite", "postgresql", "mysql"),
        f"search.storage {url!r}: expected a journal file (<path>.journal) or a database URL (sqlite:///..., postgresql://...)",
    )
    return "rdb"


PREDICTORS = ("additive", "rbf", "mlp")  # single predictors; `auto` chooses among them


@dataclass
class ModelConfig:
    """Which causal LM to search: a Hugging Face id, a local directory or `builtin:tiny-llama`."""

    path: str = MISSING
    name: str | None = None  # None: from the path (directory or hub id's last part, builtin:<name>)
    dtype: str = "float16"  # dtype the full-precision reference runs in
    device: str = "auto"  # auto: cuda if available, else cpu
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            self.name = model_name_from_path(self.path)
        _check(
            self.dtype in ("float16", "bfloat16", "float32"),
            f"model.dtype must be float16, bfloat16 or float32, got {self.dtype!r}",
        )


@dataclass
class BitsConfig:
    """The bit-width choice set of every searchable layer, and the quantization group size."""

    choices: list[int] = field(default_factory=lambda: [2, 3, 4])
    group_size: int = 128

    def __post_init__(self) -> None:
        _check(len(self.choices) > 0, "bits.choices is empty")
        for b in self.choices:
            _check(
                b in SUPPORTED_BITS, f"bits.choices: {b}-bit layers are not supported; choose from {', '.join(map(str, SUPPORTED_BITS))}"
            )
        _check(len(set(self.choices)) == len(self.choices), "bits.choices has duplicates")
        self.choices = sorted(self.choices)
        _check(self.group_size > 0, f"bits.group_size must be positive, got {self.group_size}")


@dataclass
class ProxyConfig:
    """The quantizer the search swaps in (fast and data-free by default), and where its bank lives."""

    name: str = "hqq"  # hqq | rtn | gptq (each layer on the calibration set's full-precision inputs)
    iters: int = 20  # HQQ half-quadratic iterations
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    damp: float = 0.01  # gptq: Hessian dampening, fraction of the mean diagonal
    storage: str = "dense"  # dense: 16-bit dequantized weights | codes: uint8 codes + scales (README: memory plan)
    # auto: the model's device, unless on a GPU the bank would leave less than a quarter of its memory free
    # (then pinned host memory: 13B on an 80 GB GPU) | model: the model's device | cpu (pinned when on GPU)
    bank_device: str = "auto"

    def __post_init__(self) -> None:
        _check(self.name in ("hqq", "rtn", "gptq"), f"proxy.name must be hqq, rtn or gptq, got {self.name!r}")
        _check(0 <= self.damp < 1, "proxy.damp must be in [0, 1)")
        _check(self.storage in ("dense", "codes"), f"proxy.storage must be dense or codes, got {self.storage!r}")
        _check(self.bank_device in ("auto", "model", "cpu"), f"proxy.bank_device must be auto, model or cpu, got {self.bank_device!r}")
        _check(self.iters >= 0, "proxy.iters must be >= 0")


@dataclass
class PredictorConfig:
    """Regressor from a plan's per-layer bits to its divergence."""

    name: str = "auto"  # auto (cross-validated choice among `candidates`) | additive | rbf | mlp
    # what auto chooses from; mlp ranked last at every iteration of every measured search (benchmarks/quality) and
    # costs seconds a fold, so it is left out unless named
    candidates: list[str] = field(default_factory=lambda: ["additive", "rbf"])
    folds: int = 5  # k-fold cross-validation of the predictor's ranking (Kendall tau) at every fit
    min_tau: float = 0.5  # below this CV tau the predictor proposes nothing: ILP refit and local moves do
    ridge: float = 0.1  # additive: pull of the refitted per-layer terms towards the sensitivity table
    hidden: int = 128
    layers: int = 2
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    kernel: str = "thin_plate_spline"  # rbf only
    smoothing: float = 1e-3  # rbf only
    log_target: bool = True  # rbf, mlp: fit log(divergence): errors are multiplicative across layers

    def __post_init__(self) -> None:
        kinds = PREDICTORS
        _check(self.name in (*kinds, "auto"), f"predictor.name must be auto, additive, rbf or mlp, got {self.name!r}")
        bad = [c for c in self.candidates if c not in kinds]
        _check(
            not bad and len(self.candidates) > 0,
            f"predictor.candidates must be a non-empty list of {', '.join(kinds)}, got {self.candidates}",
        )
        _check(self.folds >= 2, f"predictor.folds must be >= 2, got {self.folds}")
        _check(-1.0 <= self.min_tau <= 1.0, f"predictor.min_tau must be in [-1, 1], got {self.min_tau}")
        _check(self.ridge > 0, f"predictor.ridge must be > 0, got {self.ridge}")


@dataclass
class OptimizerConfig:
    """NSGA-II over the predictor (Optuna's NSGAIISampler)."""

    name: str = "nsga2"
    population: int = 100
    generations: int = 20  # 40 gave no better front on the default (benchmarks/e2e/results/default_run.md)
    crossover: str = "uniform"  # uniform | blxalpha | sbx | vsbx | undx | spx (Optuna's crossovers)
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    mutation_prob: float | None = None  # None: Optuna's default, 1/number of parameters

    def __post_init__(self) -> None:
        _check(self.population >= 4, "optimizer.population must be >= 4")
        _check(self.generations >= 1, "optimizer.generations must be >= 1")


@dataclass
class DataConfig:
    """Calibration text for the divergence: builtin, a local text file, or a hub dataset."""

    name: str = "builtin"  # builtin | text | wikitext2 | c4
    path: str | None = None  # text only
    num_samples: int = 16
    seq_len: int = 128
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        _check(
            self.name in ("builtin", "text", "wikitext2", "c4"),
            f"data.name must be builtin, text, wikitext2 or c4, got {self.name!r}",
        )
        _check(self.name != "text" or bool(self.path), "data=text needs data.path=<file>")
        _check(self.num_samples > 0 and self.seq_len > 1, "data.num_samples and data.seq_len must be positive")


@dataclass
class SearchConfig:
    """The iterative search-and-update loop."""

    initial_uniform: bool = True  # every uniform plan is in the initial archive
    initial_random: int = 40  # random plans spread over the memory range
    ilp_refit: bool = True  # each iteration, also an ILP plan per budget on the per-layer table refitted to the archive
    ilp_seeds: int = 5  # integer-programming plans (per-layer estimates) at the budgets + this many caps; 0 = none
    tie: list[str] = field(default_factory=list)  # layers sharing one bit-width: qkv, gate_up, or q_proj+k_proj style
    local_moves: int = 2  # each iteration, per budget: predictor-ranked bit swaps of the best plan under it; 0 = off
    iterations: int = 6  # the default front stops growing by iteration 5-6 (benchmarks/e2e/results/default_run.md)
    candidates: int = 12  # real evaluations per iteration
    metric: str = "jsd"  # jsd | kl
    prune_threshold: float = 2.0  # prune layers above this multiple of the median sensitivity; 0 = off
    prune_to: str = "highest"  # highest: fix them to the highest bits (AMQ) | no_lowest: drop the lowest choice
    strategy: str = "amq"  # amq: predictor + NSGA-II proposals | random: random plans (the baseline), same evaluation count
    budgets: list[float] = field(default_factory=lambda: [2.5, 3.0, 3.5])
    budget_unit: str = "bits"  # bits: average bits per quantized weight | gb: whole model in GB
    sensitivity_path: str | None = None  # reuse a sensitivity.json from another run
    sensitivity_bits: str = "all"  # all: measure every bit-width | lowest: measure the lowest (AMQ), scale the rest by weight error
    sensitivity_samples: int | None = None  # calibration windows the sensitivity pass scores on (the first ones); None: all
    storage: str | None = (
        None  # archive storage: None = Optuna journal file in the run dir; or a DB URL (postgresql://...) shared with workers
    )
    study: str | None = None  # study name in a shared storage (default: <run_name>-<run dir name>)
    heartbeat_s: int = 30  # DB storages: a worker silent this long x2 loses its evaluation to another worker
    driver_evaluates: bool = True  # the driver also evaluates candidates (false: only `amq.worker` processes do)

    def __post_init__(self) -> None:
        _check(self.metric in ("jsd", "kl"), f"search.metric must be jsd or kl, got {self.metric!r}")
        _check(self.budget_unit in ("bits", "gb"), f"search.budget_unit must be bits or gb, got {self.budget_unit!r}")
        _check(self.iterations >= 0 and self.candidates >= 1, "search.iterations >= 0 and search.candidates >= 1")
        _check(self.strategy in ("amq", "random"), f"search.strategy must be amq or random, got {self.strategy!r}")
        _check(self.ilp_seeds >= 0, "search.ilp_seeds must be >= 0")
        _check(self.local_moves >= 0, "search.local_moves must be >= 0")
        _check(self.sensitivity_bits in ("all", "lowest"), f"search.sensitivity_bits must be all or lowest, got {self.sensitivity_bits!r}")
        _check(self.prune_threshold >= 0, "search.prune_threshold must be >= 0")
        _check(self.sensitivity_samples is None or self.sensitivity_samples > 0, "search.sensitivity_samples must be positive")
        _check(self.prune_to in ("highest", "no_lowest"), f"search.prune_to must be highest or no_lowest, got {self.prune_to!r}")
        _check(len(self.budgets) > 0 and all(b > 0 for b in self.budgets), "search.budgets must be a non-empty list of positive numbers")
        if self.storage is not None:
            storage_kind(self.storage)


@dataclass
class FinalConfig:
    """The last step: each budget's plan chosen among the search's best and the peers' plans by
    the real quantizer, on held-out calibration windows (amq.search.final)."""

    method: str = "gptq"  # the final quantizer: gptq | awq | hqq | rtn | none (keep the proxy's choice)
    top_k: int = 4  # the search's best plans under each budget that compete
    peers: bool = True  # the ILP, greedy and uniform plans at each budget compete too
    samples: int | None = None  # calibration windows the final quantizer fits on, and held-out windows it is scored on; None: data's
    seq_len: int | None = None  # their length; None: data.seq_len. Set both to what `amq.evaluate` will quantize with

    def __post_init__(self) -> None:
        methods = (*QUANT_METHODS, "none")
        _check(self.method in methods, f"final.method must be one of {', '.join(methods)}, got {self.method!r}")
        _check(self.top_k >= 1, f"final.top_k must be >= 1, got {self.top_k}")
        _check(self.samples is None or self.samples > 0, f"final.samples must be positive, got {self.samples}")
        _check(self.seq_len is None or self.seq_len > 1, f"final.seq_len must be > 1, got {self.seq_len}")


@dataclass
class LoggerConfig:
    """Weights & Biases: offline by default (no account, no network), online, or disabled."""

    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "amq"
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.name in ("wandb", "none"), f"logger.name must be wandb or none, got {self.name!r}")
        _check(self.mode in ("offline", "online", "disabled"), f"logger.mode must be offline, online or disabled, got {self.mode!r}")


@dataclass
class Config:
    """The root config of `python -m amq.run`."""

    model: ModelConfig = MISSING
    bits: BitsConfig = MISSING
    proxy: ProxyConfig = MISSING
    predictor: PredictorConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    data: DataConfig = MISSING
    search: SearchConfig = MISSING
    final: FinalConfig = field(default_factory=FinalConfig)
    logger: LoggerConfig = MISSING
    seed: int = 0
    resume: bool = False
    run_name: str = "amq"

    def __post_init__(self) -> None:  # checks across groups, still before any model is loaded
        if self.search.budget_unit == "bits":
            lo, hi = min(self.bits.choices), max(self.bits.choices)
            for b in self.search.budgets:
                _check(lo <= b <= hi, f"search.budgets: {b:g} bits is outside what bits.choices={self.bits.choices} can reach ({lo}-{hi})")


@dataclass
class QuantizerConfig:
    """The final quantizer that applies a plan (the search's proxy is separate)."""

    method: str = "gptq"  # gptq | awq | hqq | rtn
    group_size: int = 128
    damp: float = 0.01  # gptq: Hessian dampening, fraction of the mean diagonal
    act_order: bool = False  # gptq: columns by decreasing Hessian diagonal (static groups)
    block_size: int = 128  # gptq: columns per lazy-update block
    awq_grid: int = 20  # awq: scale exponents and clip ratios tried
    awq_clip: bool = True
    integer_zeros: bool = False  # round zero-points to integer codes: needed by the compressed-tensors and GPTQ exports
    batch_size: int = 8

    def __post_init__(self) -> None:
        _check(self.method in QUANT_METHODS, f"quantizer.method must be one of {', '.join(QUANT_METHODS)}, got {self.method!r}")
        _check(self.group_size > 0, f"quantizer.group_size must be positive, got {self.group_size}")
        _check(0 <= self.damp < 1, "quantizer.damp must be in [0, 1)")


PLAN_SOURCES = ("none", "uniform", "file", "ilp", "greedy")


@dataclass
class PlanConfig:
    """Which per-layer plan to apply: uniform bits, a plan JSON from a search, or a peer
    allocator (ilp, greedy) over a search's per-layer sensitivity table at a budget."""

    source: str = "uniform"  # none (16-bit reference) | uniform | file | ilp | greedy
    bits: int = 3  # uniform
    path: str | None = None  # file: plans/<b>bits.json; ilp/greedy: a run dir or its sensitivity.json
    budget: float | None = (
        None  # ilp/greedy: the budget; file: fit the plan to this new budget exactly (ILP repair over the run's sensitivity table)
    )
    budget_unit: str = "bits"
    choices: list[int] = field(default_factory=lambda: [2, 3, 4])  # ilp/greedy
    tie: list[str] | None = None  # ilp/greedy/repair: tied groups (qkv, gate_up); None = as the search run had them

    def __post_init__(self) -> None:
        _check(self.source in PLAN_SOURCES, f"plan.source must be one of {', '.join(PLAN_SOURCES)}, got {self.source!r}")
        _check(
            self.bits in SUPPORTED_BITS,
            f"plan.bits: {self.bits}-bit layers are not supported; choose from {', '.join(map(str, SUPPORTED_BITS))}",
        )
        _check(self.source in ("none", "uniform") or bool(self.path), f"plan={self.source} needs plan.path=<plan json or search run dir>")
        _check(self.source not in ("ilp", "greedy") or self.budget is not None, f"plan={self.source} needs plan.budget=<bits or GB>")
        _check(self.budget_unit in ("bits", "gb"), f"plan.budget_unit must be bits or gb, got {self.budget_unit!r}")


@dataclass
class EvalSettings:
    """Perplexity by the standard protocol: each test text joined, non-overlapping windows."""

    tests: list[str] = field(default_factory=list)  # wikitext2 | c4 | builtin | a local text file (named <folder>/<stem>)
    seq_len: int = 2048
    batch_size: int = 1
    max_windows: int | None = None  # None: the whole split (the standard); a number for quick checks
    zero_shot: list[str] = field(default_factory=list)  # lm-eval tasks, e.g. [arc_easy, piqa]; needs amq[eval]
    tasks_path: str | None = None  # a folder of local lm-eval task YAMLs (offline)
    zero_shot_limit: int | None = None  # examples per task (None: all)
    vs_16bit_windows: int = 16  # KL, JSD and same-top-token rate vs the 16-bit model on this many windows of the first test; 0 = off

    def __post_init__(self) -> None:
        _check(self.seq_len > 1 and self.batch_size > 0, "eval.seq_len and eval.batch_size must be positive")
        _check(self.vs_16bit_windows >= 0, "eval.vs_16bit_windows must be >= 0")


EXPORT_FORMATS = ("amq", "compressed-tensors", "gptq", "gptq_v2")


@dataclass
class EvaluateConfig:
    """The root config of `python -m amq.evaluate`: quantize a model to a plan, measure, export."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING  # calibration data for gptq/awq
    quantizer: QuantizerConfig = MISSING
    plan: PlanConfig = MISSING
    eval: EvalSettings = field(default_factory=EvalSettings)
    logger: LoggerConfig = MISSING
    export: bool = False  # write the quantized model into the run dir, in every format of export_formats
    export_formats: list[str] = field(default_factory=lambda: ["amq"])  # amq | compressed-tensors | gptq | gptq_v2
    seed: int = 0
    run_name: str = "eval"

    def __post_init__(self) -> None:
        bad = sorted(set(self.export_formats) - set(EXPORT_FORMATS))
        _check(not bad, f"export_formats: unknown {bad}; choose from {', '.join(EXPORT_FORMATS)}")


# --- the small tools' settings (`python -m amq.plan`, `amq.worker`, `amq.report`, `amq.export`),
# composed by Hydra from these schemas alone (amq.cli.compose_tool): key=value on the command line


@dataclass
class ReplanConfig:
    """`python -m amq.plan`: a plan for a new memory target from a finished search."""

    run_dir: str = MISSING  # the search's run dir
    budget: float = MISSING  # the new target, in `unit`
    unit: str = "bits"  # bits (average per weight) | gb (model size) | tok_s (decode tokens a second) | us (our GEMMs a step)
    latency: str | None = None  # tok_s / us: "measure" (our kernels on `device`, cached per GPU) or a latency table's path
    device: str = "cuda"  # where latency=measure times the kernels
    overhead_us: float = 0.0  # tok_s: the rest of a decode step (attention, norms, lm_head) in microseconds

    def __post_init__(self) -> None:
        _check(self.unit in ("bits", "gb", "us", "tok_s"), f"unit must be bits, gb, tok_s or us, got {self.unit!r}")
        _check(self.unit in ("bits", "gb") or self.latency is not None, f"unit={self.unit} needs latency=measure or a table's path")
        _check(self.overhead_us >= 0, f"overhead_us must be >= 0, got {self.overhead_us}")


@dataclass
class WorkerConfig:
    """`python -m amq.worker`: evaluate a search's candidates on this device."""

    storage: str = MISSING  # the driver's search.storage: a database URL or a .journal file
    study: str = MISSING  # the driver's search.study
    model: str = MISSING  # the driver's model: path, hub id or builtin:<name> (must match the study's)
    trust_remote_code: bool = False  # only for a model you trust: runs its repository's code
    device: str | None = None  # e.g. cuda:1; None: the model config's
    poll_s: float = 1.0  # seconds between looks for queued plans
    heartbeat_s: int | None = None  # None: the study's
    wait_s: float = 600.0  # give up after this long with nothing queued


@dataclass
class ReportConfig:
    """`python -m amq.report`: one comparison from many `amq.evaluate` runs."""

    dir: str = MISSING  # a multirun (or any) directory holding amq.evaluate runs
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "amq"

    def __post_init__(self) -> None:
        _check(
            self.wandb_mode in ("offline", "online", "disabled"), f"wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}"
        )


@dataclass
class ExportInfoConfig:
    """`python -m amq.export`: what an export holds."""

    path: str = MISSING  # an export directory (written by python -m amq.evaluate ... export=true)


TOOL_SCHEMAS = {
    "replan_schema": ReplanConfig,
    "worker_schema": WorkerConfig,
    "report_schema": ReportConfig,
    "export_schema": ExportInfoConfig,
}


def register_configs() -> None:
    """Register the root schemas: every group's YAML is merged into its typed field, and the
    `model_name` resolver (run_name: the model's name, or its path's last part when none is set)."""
    if not OmegaConf.has_resolver("model_name"):
        OmegaConf.register_new_resolver("model_name", lambda name, path: name or model_name_from_path(str(path)))
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    for name, node in TOOL_SCHEMAS.items():
        cs.store(name=name, node=node)


def config_from_dict(doc: dict) -> Config:
    """A search's config as a run recorded it (its study's `config`, or .hydra/config.yaml), validated."""
    register_configs()
    return to_object(OmegaConf.merge(OmegaConf.structured(Config), doc))


def to_object(cfg: DictConfig | Any) -> Any:
    """Turn a composed DictConfig into validated dataclasses (raises AMQConfigError)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except AMQConfigError:
        raise
    except Exception as exc:  # omegaconf validation errors: keep only the first line
        raise AMQConfigError(str(exc).splitlines()[0]) from None
    assert isinstance(obj, (Config, EvaluateConfig))
    return obj
