"""Config schema: strict keys with suggestions, typed overrides, base: inheritance."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightfocus.engine.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    load_config_dict,
)

MIN = {"data": {"dataset": "decoy_mnist"}, "model": {"name": "lenet"}}


def test_defaults_and_roundtrip(tmp_path: Path) -> None:
    cfg = load_config_dict(MIN)
    assert cfg.data.folds == 3 and cfg.optim.optimizer == "adam"
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert cfg.run_dir == Path("runs") / "default" / "run"


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optim.lrr=0.1", r"Unknown config key 'optim\.lrr' \(did you mean 'lr'\?\).*epochs"),
        ("data.datset=x", r"'data\.datset' \(did you mean 'dataset'\?\)"),
        ("epochz=3", r"Unknown config key 'epochz'.*Allowed keys at the top level: experiment"),
    ],
)
def test_typo_names_key_allowed_and_suggestion(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config_dict(MIN, [override])


def test_typo_in_file_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: decoy_mnist}\nmodel: {name: lenet}\ntrainer: {devcies: 2}\n")
    with pytest.raises(ConfigError, match=r"'trainer\.devcies' \(did you mean 'devices'\?\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.epochs=abc", "optim.epochs"),
        ("optim.lr=[1]", "optim.lr"),
        ("data.feedback_fraction=1.5", "data.feedback_fraction"),
        ("trainer.precision=half", "trainer.precision"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.bayesian=maybe", "model.bayesian"),
    ],
)
def test_set_wrong_type_or_range_names_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"(?m)^  {field.replace('.', '[.]')}: "):
        load_config_dict(MIN, [override])


def test_set_parses_yaml_values_and_list_indices() -> None:
    raw = {**MIN, "guidance": [{"name": "rrr", "lam": 1000.0}]}
    cfg = load_config_dict(
        raw,
        [
            "optim.lr=1e-3",
            "guidance.0.lam=5e-5",
            "data.fold=1",
            "data.folds=3",
            "run=x",
            "data.batch_size=auto",
            "trainer.strategy=ddp",
        ],
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.guidance[0].params == {"lam": 5e-5}
    assert (cfg.data.fold, cfg.run, cfg.data.batch_size) == (1, "x", "auto")
    with pytest.raises(ConfigError, match=r"guidance\.3 needs a list index in \[0, 0\]"):
        load_config_dict(raw, ["guidance.3.lam=1"])


def test_guidance_params_checked_against_constructor() -> None:
    with pytest.raises(
        ConfigError, match=r"'rrr' has no parameter 'lamda' \(did you mean 'lam'\?\)"
    ):
        load_config_dict({**MIN, "guidance": [{"name": "rrr", "lamda": 1.0}]})
    with pytest.raises(ConfigError, match=r"unknown guidance method 'rr' \(did you mean 'rrr'\?\)"):
        load_config_dict({**MIN, "guidance": [{"name": "rr"}]})
    with pytest.raises(ConfigError, match=r"model\.bayesian: true"):
        load_config_dict({**MIN, "guidance": [{"name": "bayes_feedback"}]})


def test_fold_range_and_registries() -> None:
    with pytest.raises(ConfigError, match=r"fold must be in \[0, folds - 1\]"):
        load_config_dict(MIN, ["data.fold=3"])
    with pytest.raises(ConfigError, match=r"unknown model 'lenett' \(did you mean 'lenet'\?\)"):
        load_config_dict(MIN, ["model.name=lenett"])
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        load_config_dict(MIN, ["evaluation.metrics=[acc]"])


def test_base_extends_and_merges(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "data: {dataset: decoy_mnist, variant: color, seed: 4}\nmodel: {name: lenet}\n"
        "optim: {lr: 1e-3, epochs: 5}\n"
    )
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../base.yaml\ndata: {variant: position}\noptim: {epochs: 7}\n")
    cfg = load_config(child, ["optim.lr=2e-3"])
    assert (cfg.data.variant, cfg.data.seed, cfg.optim.epochs, cfg.optim.lr) == (
        "position",
        4,
        7,
        2e-3,
    )
    (tmp_path / "base.yaml").write_text("base: sub/child.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(child)


def test_proxy_attention_is_a_guidance_method() -> None:
    raw = {**MIN, "optim": {"epochs": 3}}
    pa = {"name": "proxy_attention", "schedule": [1, "p", 1], "threshold": 0.5}
    cfg = load_config_dict({**raw, "guidance": [pa]})
    assert isinstance(cfg, Config) and cfg.guidance[0].name == "proxy_attention"
    with pytest.raises(ConfigError, match="has no parameter 'treshold'"):
        load_config_dict({**raw, "guidance": [{"name": "proxy_attention", "treshold": 0.5}]})
    with pytest.raises(ConfigError, match=r"covers 5 epochs but optim\.epochs is 3"):
        load_config_dict({**raw, "guidance": [{**pa, "schedule": [2, "p", 2]}]})
    with pytest.raises(ConfigError, match=r"now a guidance method.*name: proxy_attention"):
        load_config_dict({**raw, "proxy_attention": {"schedule": [1, "p", 1]}})


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.experiment and cfg.data.dataset and cfg.model.name
    assert path.read_text().startswith("#"), "each config starts with a documenting comment block"


def test_set_parses_lists_bools_null_and_keeps_text_literal() -> None:
    cfg = load_config_dict(
        MIN,
        [
            "evaluation.metrics=[accuracy, f1]",
            "model.bayesian=true",
            "data.max_train=null",
            "data.options={colour: false}",
            "experiment=${not_interpolated}",
            "optim.weight_decay=1e-4",
        ],
    )
    assert cfg.evaluation.metrics == ["accuracy", "f1"] and cfg.model.bayesian is True
    assert cfg.data.max_train is None and cfg.data.options == {"colour": False}
    assert cfg.experiment == "${not_interpolated}"
    assert isinstance(cfg.optim.weight_decay, float) and cfg.optim.weight_decay == 1e-4
    raw = apply_overrides({}, ["a.b=1e-3", "a.c=[1, x]", "a.d=off", "e="])
    assert raw == {"a": {"b": 1e-3, "c": [1, "x"], "d": False}, "e": ""}
    assert isinstance(raw["a"]["b"], float)
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config_dict(MIN, ["optim.lr"])
    with pytest.raises(ConfigError, match="has an empty key"):
        load_config_dict(MIN, ["optim..lr=1"])


def test_base_merge_replaces_lists_and_merges_sections(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "data: {dataset: decoy_mnist, options: {a: 1, b: 2}}\nmodel: {name: lenet}\n"
        "evaluation: {metrics: [accuracy, f1, auc]}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "base: base.yaml\ndata: {options: {b: 3}}\nevaluation: {metrics: [nll]}\n"
    )
    cfg = load_config(tmp_path / "child.yaml", ["data.options.c=1e-3"])
    assert cfg.data.options == {"a": 1, "b": 3, "c": 1e-3}
    assert cfg.evaluation.metrics == ["nll"]  # a list is replaced, not merged
