"""Experiment configs: a strict, validated schema read from YAML, with ``base:`` and ``--set``.

A config file is a mapping with the sections ``data``, ``model``, ``guidance``,
``optim``, ``trainer`` and ``evaluation`` plus the top-level keys
``experiment``, ``run`` and ``runs_dir`` (the run folder is ``<runs_dir>/<experiment>/<run>/``).
``base: other.yaml`` (relative to the file) extends another config: mappings are merged key by
key, every other value (lists included) is replaced (``OmegaConf.merge``). Overrides are dotted
paths with YAML values, ``optim.lr=1e-3`` or ``guidance.0.lam=5e-5`` (list indices are numbers),
set by ``OmegaConf.update``. Files, override values and sweep files are read by one YAML loader
(:func:`parse_yaml`); ``${...}`` is not interpolated. pydantic validates the result.

Unknown keys are errors naming the key, the allowed ones and the closest match; values are
checked (types, ranges, choices) and reported by their dotted field name.

Example:
    >>> cfg = load_config_dict({"data": {"dataset": "decoy_mnist"}, "model": {"name": "lenet"}},
    ...                        overrides=["optim.lr=1e-3"])
    >>> cfg.optim.lr
    0.001
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rightfocus import configs as shipped_configs
from rightfocus._registry import DATASETS, GUIDANCE, METHODS, MODELS
from rightfocus.errors import UserError, one_line

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = [
    "METRIC_NAMES",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "GuidanceSpec",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_diff",
    "load_config",
    "load_config_dict",
    "parse_yaml",
]

METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1", "auc", "ece", "nll", "overlap")


class ConfigError(UserError):
    """A config file, override or value is invalid; the message says which and what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DataConfig(_Section):
    """Which data, how it is split (k-fold over the train pool) and batched."""

    dataset: str
    variant: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    root: str | None = None
    image_size: int | None = Field(default=None, ge=8)
    download: bool = False
    feedback_fraction: float = Field(default=0.7, ge=0.0, le=1.0)
    folds: int = Field(default=3, ge=1)
    fold: int = Field(default=0, ge=0)
    seed: int = 0
    batch_size: int | Literal["auto"] = 128
    num_workers: int = Field(default=0, ge=0)
    max_train: int | None = Field(default=None, ge=2)
    max_test: int | None = Field(default=None, ge=1)
    class_weights: Literal["none", "inverse_frequency"] | list[float] = "none"

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("batch_size must be >= 1 or 'auto'")
        return v

    @model_validator(mode="after")
    def _fold(self) -> DataConfig:
        if self.folds > 1 and self.fold >= self.folds:
            raise ValueError(f"fold must be in [0, folds - 1] = [0, {self.folds - 1}]")
        if self.folds == 1 and self.fold != 0:
            raise ValueError("folds: 1 (no validation split) needs fold: 0")
        return self


class ModelConfig(_Section):
    """A registered model, optionally turned Bayesian (LRT layers) and/or loaded from a file."""

    name: str
    bayesian: bool = False
    rho_init: float = -3.0
    prior_sigma: float = Field(default=0.1, gt=0.0)
    # Multiplies the ELBO's KL term (KL / minibatches per epoch). 1.0 is the plain ELBO; a
    # smaller value mimics a larger training set, e.g. 4000/60000 to give the bundled 4,000
    # digits the KL-to-data balance of full MNIST.
    kl_weight: float = Field(default=1.0, ge=0.0)
    xdnn: bool = False
    weights: str | None = None
    # Which part of the model's return value is the logits tensor (the attribution ``output=``
    # selector, configured once for training, metrics and explanations): null = automatic
    # (a tensor as is, else a ``.logits`` field / "logits" key / first tuple element), an int =
    # tuple index, a str = dict key or attribute name.
    output: int | str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class GuidanceSpec(BaseModel):
    """One guidance method: ``{name: rrr, lam: 1000.0}``; params are checked against its class."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_Section):
    """Optimiser, learning-rate schedule (stepped per epoch) and number of epochs."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    scheduler: Literal["none", "exponential", "step", "cosine"] = "none"
    gamma: float = Field(default=0.99, gt=0.0, le=1.0)
    step_size: int = Field(default=30, ge=1)
    epochs: int = Field(default=10, ge=1)


class TrainerConfig(_Section):
    """Lightning Trainer settings."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    precision: Literal["32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    deterministic: bool = True
    checkpoint_every_n_steps: int | None = Field(default=50, ge=1)
    log_every_n_steps: int = Field(default=50, ge=1)
    val_every_n_epochs: int = Field(default=1, ge=1)
    progress_bar: bool = True
    gradient_clip_val: float | None = Field(default=None, gt=0.0)


class EvaluationConfig(_Section):
    """Final test metrics, the attribution used for ``overlap`` and model selection."""

    metrics: list[str] = Field(default_factory=lambda: list(METRIC_NAMES))
    attribution: str = "auto"
    attribution_options: dict[str, Any] = Field(default_factory=dict)
    overlap_target: Literal["label", "pred"] = "label"
    mc_samples: int = Field(default=10, ge=1)
    # MC samples for the per-epoch validation of Bayesian models (model selection); None: as
    # mc_samples; 0: the mean network (no sampling), the cheapest choice for long runs.
    val_mc_samples: int | None = Field(default=None, ge=0)
    monitor: Literal["val/acc", "val/auc", "val/balanced_accuracy", "val/loss"] = "val/acc"
    checkpoint: Literal["best", "last"] = "best"
    batch_size: int = Field(default=256, ge=1)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in METRIC_NAMES:
                raise ValueError(f"unknown metric {name!r}{_hint(name, METRIC_NAMES)}")
        if not v:
            raise ValueError(f"list at least one metric of {', '.join(METRIC_NAMES)}")
        return v


class Config(_Section):
    """The whole experiment; ``to_yaml()`` writes it back (resolved, no ``base:``)."""

    experiment: str = "default"
    run: str = "run"
    runs_dir: str = "runs"
    data: DataConfig
    model: ModelConfig
    guidance: list[GuidanceSpec] = Field(default_factory=list)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @field_validator("experiment", "run")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or v in (".", ".."):
            raise ValueError("must be a non-empty folder name without '/'")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.experiment / self.run

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# --- YAML reading ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely (no Python objects), floats like ``1e-3`` included."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None


def _container(node: Any) -> Any:
    """Plain Python dicts / lists of an OmegaConf node (``${...}`` kept as text, unresolved)."""
    from omegaconf import OmegaConf  # heavy: OmegaConf (~80 modules), only for base: / --set

    return OmegaConf.to_container(node, resolve=False)


def _omega(raw: Mapping[str, Any], source: str) -> DictConfig:
    # heavy: OmegaConf (~80 modules), only for base: / --set
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.create(dict(raw))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {one_line(str(err))}") from None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``over`` merged into ``base`` by OmegaConf: sections merge key by key, any other value
    (lists included) is replaced."""
    from omegaconf import OmegaConf  # heavy: OmegaConf (~80 modules), only for base: / --set

    merged = OmegaConf.merge(_omega(base, source), _omega(over, source))
    return cast(dict[str, Any], _container(merged))


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"Config files extend each other in a cycle: {chain}")
    if not path.is_file():
        where = f" (the base of {seen[-1]})" if seen else ""
        raise ConfigError(f"Config file {path}{where} does not exist")
    raw = parse_yaml(path.read_text(), str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must hold a mapping of config sections, not {type(raw).__name__}"
        )
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another YAML file, got {base!r}")
    parent = _read_file(path.parent / base, (*seen, path))
    return _merge(parent, raw, str(path))


# --- overrides ------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """An override's value, read by the config files' YAML loader (``1e-3`` is a float,
    ``[a, b]`` a list, ``true`` a bool, ``null`` None; an empty value is the empty string)."""
    return parse_yaml(text, f"override value {text!r}") if text.strip() else ""


def _bad_index(raw: Any, keys: Sequence[str]) -> str | None:
    """Where ``keys`` indexes a list out of range or by a non-number (None: nowhere)."""
    node = raw
    for i, key in enumerate(keys):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                where = ".".join(keys[: i + 1])
                return f"{where} needs a list index in [0, {len(node) - 1}]"
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``raw`` with every ``dotted.path=value`` override set (OmegaConf's dotted update: list
    items by index, missing sections created; the value parsed as YAML by :func:`parse_yaml`).

    Raises:
        ConfigError: an override without ``=``, with an empty key or a bad list index.
    """
    if not overrides:
        return copy.deepcopy(dict(raw))
    # heavy: OmegaConf (~80 modules), only for base: / --set
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = _omega(raw, "config")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"Override {override!r} must look like section.key=value")
        path, text = override.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"Override {override!r} has an empty key in {path!r}")
        bad = _bad_index(_container(cfg), keys)
        if bad is not None:
            raise ConfigError(f"Override {override!r}: {bad}")
        try:
            OmegaConf.update(cfg, ".".join(keys), _parse_value(text), merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"Override {override!r}: {one_line(str(err))}") from None
    return cast(dict[str, Any], _container(cfg))


# --- validation and messages ----------------------------------------------------------------------


def _hint(name: str, allowed: Sequence[str]) -> str:
    close = get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(where: str, key: str, allowed: Sequence[str]) -> ConfigError:
    path = f"{where}.{key}" if where else key
    section = f"in {where}" if where else "at the top level"
    return ConfigError(
        f"Unknown config key {path!r}{_hint(key, allowed)}. Allowed keys {section}: "
        f"{', '.join(allowed)}"
    )


def _check_keys(model: type[BaseModel], raw: Any, where: str = "") -> None:
    """Name unknown keys (with the allowed ones) before pydantic sees them."""
    if not isinstance(raw, dict):
        return
    allowed = list(model.model_fields)
    for key, value in raw.items():
        if key not in allowed:
            raise _unknown_key(where, str(key), allowed)
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            _check_keys(annotation, value, f"{where}.{key}" if where else key)


_TYPE_TAGS = ("int", "float", "str", "bool", "none", "list", "dict")


def _is_type_tag(part: str) -> bool:
    """pydantic adds union member tags (``int``, ``literal['auto']``) to error locations."""
    return part in _TYPE_TAGS or "[" in part or part.startswith("function-")


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _is_type_tag(str(p)))
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"  {loc}: {e['msg']}{shown}")
    return "\n".join(dict.fromkeys(lines))


def _check_params(kind: str, name: str, target: Any, params: Mapping[str, Any]) -> None:
    sig = inspect.signature(target)
    allowed = [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"{kind} {name!r} has no parameter {key!r}{_hint(key, allowed)}. "
                f"Allowed parameters: {', '.join(allowed) or '(none)'}"
            )
    try:
        sig.bind_partial(**params)
    except TypeError as err:
        raise ConfigError(f"{kind} {name!r}: {err}") from None


def _check_guidance(cfg: Config) -> None:
    # heavy: registering the guidance methods imports torch and the attribution methods
    import rightfocus.guidance  # noqa: F401

    for i, spec in enumerate(cfg.guidance):
        if spec.name not in GUIDANCE:
            raise ConfigError(
                f"guidance.{i}.name: unknown guidance method {spec.name!r}"
                f"{_hint(spec.name, GUIDANCE.names())}. Known: {', '.join(GUIDANCE.names())}"
            )
        _check_params(f"guidance.{i}", spec.name, GUIDANCE.get(spec.name).__init__, spec.params)
        meta = GUIDANCE.metadata(spec.name)
        if meta.get("requires_bayesian") and not cfg.model.bayesian:
            raise ConfigError(
                f"guidance.{i} ({spec.name}) needs a Bayesian model: set model.bayesian: true"
            )


def _check_guidance_config(cfg: Config) -> None:
    """Every guidance method checks its options and the whole config (``check_config``)."""

    whole = cfg.to_dict()
    for i, spec in enumerate(cfg.guidance):
        try:
            GUIDANCE.get(spec.name)(**spec.params).check_config(whole)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"guidance.{i} ({spec.name}): {err}") from None


def _check_registries(cfg: Config) -> None:
    # heavy: registering the datasets imports torch and the data modules
    import rightfocus.data  # noqa: F401

    for field, name, reg in (
        ("data.dataset", cfg.data.dataset, DATASETS),
        ("model.name", cfg.model.name, MODELS),
    ):
        if name not in reg:
            raise ConfigError(
                f"{field}: unknown {reg.kind} {name!r}{_hint(name, reg.names())}. "
                f"Known: {', '.join(reg.names())}"
            )
    method = cfg.evaluation.attribution
    if method != "auto" and method not in METHODS:
        raise ConfigError(
            f"evaluation.attribution: unknown attribution method {method!r}"
            f"{_hint(method, METHODS.names())}. Use 'auto' or one of {', '.join(METHODS.names())}"
        )


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a resolved mapping into a :class:`Config` (errors name the fields)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, not {type(raw).__name__}")
    if "base" in raw:
        raise ConfigError(f"{source}: 'base' is only allowed in config files")
    if "proxy_attention" in raw:
        raise ConfigError(
            f"{source}: the proxy_attention: section is now a guidance method. Move its keys "
            "into the guidance list: guidance: [{name: proxy_attention, schedule: [5, p, 9], "
            "method: gradcam_plus_plus, ...}] (and drop proxy_attention:)"
        )
    _check_keys(Config, raw)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"Invalid {source}:\n{_format_errors(err)}") from None
    _check_registries(cfg)
    _check_guidance(cfg)
    _check_guidance_config(cfg)
    return cfg


def load_config_dict(raw: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Validate an in-memory mapping after applying ``overrides`` (``"a.b=value"``)."""
    data = apply_overrides(raw, overrides)
    return validate(data, "config" + (f" (with --set {', '.join(overrides)})" if overrides else ""))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read ``path`` (following ``base:``), apply ``overrides`` and validate.

    Raises:
        ConfigError: for a missing file, bad YAML, an unknown key or an invalid value; the message
            names the dotted field.
    """
    raw = apply_overrides(_read_file(shipped_configs.resolve(path)), overrides)
    source = str(path) + (f" with --set {' '.join(overrides)}" if overrides else "")
    return validate(raw, source)


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    out: list[str] = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        path = f"{prefix}{key}"
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += config_diff(va, vb, f"{path}.")
        elif va != vb:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out
