"""Proxy Attention: blend rule, selection, store policies, the proxy step and resumed runs."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus import GUIDANCE, attribute
from rightfocus.engine.callbacks import ProxyAttentionCallback
from rightfocus.guidance.base import GuidedBatch
from rightfocus.guidance.proxy_attention import (
    ProxyAttention,
    ProxyDataset,
    blend_proxy,
    proxy_step,
    schedule_epochs,
    select_misclassified,
)

NORM = ((0.5,), (0.25,))


def test_blend_rule_gives_exact_pixels() -> None:
    img = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    cam = torch.tensor([[[[1.0, 0.9], [0.85, 0.1]]]])
    out = blend_proxy(img, cam, threshold=0.85, weight=0.4)
    # (1 - 0.4 * cam) * x where cam > 0.85 (strictly), else x
    expected = torch.tensor([[[[0.6 * 0.2, (1 - 0.36) * 0.4], [0.6, 0.8]]]])
    torch.testing.assert_close(out, expected)


def test_statistic_rules_replace_selected_pixels_per_channel() -> None:
    img = torch.stack(
        [torch.tensor([[0.2, 0.4], [0.6, 0.8]]), torch.tensor([[1.0, 0.0], [0.5, 0.5]])]
    )
    img = img.unsqueeze(0)  # (1, 2, 2, 2)
    cam = torch.tensor([[[[0.9, 0.0], [0.0, 0.0]]]])
    for rule, stats in (("mean", (0.5, 0.5)), ("min", (0.2, 0.0)), ("max", (0.8, 1.0))):
        out = blend_proxy(img, cam, threshold=0.85, rule=rule)
        expected = img.clone()
        expected[0, 0, 0, 0], expected[0, 1, 0, 0] = stats
        torch.testing.assert_close(out, expected, msg=rule)
    with pytest.raises(ValueError, match="rule"):
        blend_proxy(img, cam, rule="median")
    with pytest.raises(ValueError, match="size"):
        blend_proxy(img, cam[..., :1], rule="mean")


def test_select_first_ceil_subset_of_misclassified() -> None:
    preds = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    labels = torch.tensor([0, 0, 2, 1, 1, 0, 1])  # wrong: 1, 3, 5, 6
    assert select_misclassified(preds, labels, 0.2).tolist() == [1]  # ceil(0.8) = 1
    assert select_misclassified(preds, labels, 0.5).tolist() == [1, 3]
    assert select_misclassified(preds, labels, 1.0).tolist() == [1, 3, 5, 6]
    assert select_misclassified(preds, preds, 0.5).numel() == 0
    with pytest.raises(ValueError, match="subset"):
        select_misclassified(preds, labels, 0.0)


def test_schedule_epochs() -> None:
    assert schedule_epochs([5, "p", 9, "p", 9, "p", 9, "p", 4]) == (40, [5, 15, 25, 35])
    assert schedule_epochs([20, "p", 19]) == (40, [20])
    assert schedule_epochs([40]) == (40, [])
    for bad in ([], [5, "x"], [-1, "p"], "5p", [True]):
        with pytest.raises(ValueError, match="schedule"):
            schedule_epochs(bad)  # type: ignore[arg-type]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _data(model: nn.Module, n: int = 12) -> tuple[list, list[int]]:
    """Items (x, y, mask) whose labels make exactly the listed samples misclassified."""
    x = torch.randn(n, 1, 8, 8)
    with torch.no_grad():
        preds = model(x).argmax(1)
    wrong = [1, 2, 4, 7, 8, 11]
    y = [int((p + 1) % 3) if i in wrong else int(p) for i, p in enumerate(preds)]
    return [(x[i], y[i], torch.zeros(1, 8, 8)) for i in range(n)], wrong


def test_proxy_step_changes_only_the_subset_of_misclassified() -> None:
    model = _Net().eval()
    items, wrong = _data(model)
    ds = ProxyDataset(items)
    result = proxy_step(
        model,
        ds,
        method="gradcam",
        subset=0.5,
        weight=0.4,
        threshold=0.5,
        normalization=NORM,
        batch_size=4,
    )
    chosen = wrong[: math.ceil(0.5 * len(wrong))]
    assert result.indices.tolist() == chosen and result.n_wrong == len(wrong)
    assert sorted(ds.proxy_indices) == chosen and len(ds) == len(items)
    for i, item in enumerate(items):
        got = ds[i]
        assert got[1] == item[1] and torch.equal(got[2], item[2])
        if i not in chosen:
            assert torch.equal(got[0], item[0])
            continue
        x = item[0][None]
        pred = model(x).argmax(1)
        cam = attribute(model, x, pred, method="gradcam")
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-8)
        x01 = x * 0.25 + 0.5
        expected = (blend_proxy(x01, cam, 0.5, 0.4) - 0.5) / 0.25
        torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
        assert not torch.equal(got[0], item[0])


def test_store_policies_and_clear() -> None:
    items = [(torch.zeros(1, 2, 2), k, torch.zeros(1, 2, 2)) for k in range(3)]
    ds = ProxyDataset(items)
    ds.set_proxies([1], torch.ones(1, 1, 2, 2), "replace")
    assert len(ds) == 3 and ds[1][0].sum() == 4 and ds[0][0].sum() == 0
    ds.set_proxies([2], torch.full((1, 1, 2, 2), 2.0), "add")
    assert len(ds) == 4 and ds[3][1] == 2 and ds[3][0].sum() == 8 and ds[2][0].sum() == 0
    ds.clear()
    assert len(ds) == 3 and ds.num_proxies == 0 and ds[1][0].sum() == 0
    with pytest.raises(IndexError):
        ds.set_proxies([3], torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="store"):
        ds.set_proxies([0], torch.ones(1, 1, 2, 2), "append")


def test_state_dict_round_trip_weights_only(tmp_path: Path) -> None:
    items = [(torch.zeros(1, 2, 2), k, torch.zeros(1, 2, 2)) for k in range(3)]
    ds = ProxyDataset(items)
    ds.set_proxies([0, 2], torch.rand(2, 1, 2, 2), "replace")
    ds.set_proxies([1], torch.rand(1, 1, 2, 2), "add")
    torch.save(ds.state_dict(), tmp_path / "s.pt")
    fresh = ProxyDataset(items)
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert len(fresh) == 4 and fresh.proxy_indices == ds.proxy_indices
    for i in range(4):
        assert torch.equal(fresh[i][0], ds[i][0])


# --- Lightning: the callback on a real Trainer ------------------------------------------------


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = _Net()

    def training_step(self, batch, _idx):  # type: ignore[no-untyped-def]
        x, y, _ = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.0)  # frozen: predictions stay fixed


class _Data(pl.LightningDataModule):
    def __init__(self, items: list) -> None:
        super().__init__()
        self.train_dataset = ProxyDataset(items)
        self.normalization = NORM

    def train_dataloader(self):  # type: ignore[no-untyped-def]
        return torch.utils.data.DataLoader(self.train_dataset, batch_size=4, shuffle=True)


def _callback(**params) -> ProxyAttentionCallback:  # type: ignore[no-untyped-def]
    (cb,) = ProxyAttention(**params).callbacks()
    assert isinstance(cb, ProxyAttentionCallback)
    return cb


def _trainer(tmp_path: Path, cb: pl.Callback, epochs: int, **kw) -> pl.Trainer:  # type: ignore[no-untyped-def]
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )


def test_callback_runs_on_schedule_and_resumed_run_keeps_proxies(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Module()
    items, wrong = _data(module.model)
    cb = _callback(
        schedule=[1, "p", 1],
        method="gradcam",
        subset=1.0,
        threshold=0.5,
        clear="after_step",
        figure_dir=tmp_path / "fig",
    )
    data = _Data(items)
    _trainer(tmp_path, cb, cb.guidance.total_epochs).fit(module, datamodule=data)
    assert cb.steps_done == [1] and len(cb.history) == 1
    assert sorted(data.train_dataset.proxy_indices) == wrong
    assert (tmp_path / "fig" / "proxy_epoch001.png").is_file()
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    assert any("ProxyAttention" in k for k in state["callbacks"])

    # resume into fresh objects: proxies come back, the step is not repeated
    module2, data2 = _Module(), _Data(items)
    cb2 = _callback(
        schedule=[1, "p", 1],
        method="gradcam",
        subset=1.0,
        threshold=0.5,
        clear="after_step",
        figure_dir=tmp_path / "fig2",
    )
    _trainer(tmp_path, cb2, 4).fit(module2, datamodule=data2, ckpt_path=ckpt)
    assert cb2.steps_done == [1] and not (tmp_path / "fig2").exists()
    assert sorted(data2.train_dataset.proxy_indices) == wrong
    for i in wrong:
        assert torch.equal(data2.train_dataset[i][0], data.train_dataset[i][0])


def test_clear_at_end_and_add_policy(tmp_path: Path) -> None:
    module = _Module()
    items, _ = _data(module.model)
    data = _Data(items)
    seen_len = []

    class Spy(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            seen_len.append(len(data.train_dataset))

    cb = _callback(
        schedule=[1, "p", 1],
        method="gradcam",
        subset=0.5,
        store="add",
        clear="end",
        figure_images=0,
    )
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        _trainer(tmp_path, cb, 3).fit(module, datamodule=data)
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[cb, Spy()],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        reload_dataloaders_every_n_epochs=1,
    )
    trainer.fit(module, datamodule=data)
    assert seen_len == [12, 12 + 3, 12 + 3]
    assert len(data.train_dataset) == 12 and data.train_dataset.num_proxies == 0  # cleared


def test_callback_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="store"):
        ProxyAttention(store="keep")
    with pytest.raises(ValueError, match="clear"):
        ProxyAttention(clear="never")
    with pytest.raises(ValueError, match="subset"):
        ProxyAttention(subset=1.5)
    assert ProxyAttention().total_epochs == 40
    module = _Module()
    items, _ = _data(module.model)
    for method, match in (("nope", "not a registered"), ("saliency", "needs a CAM")):
        cb = _callback(schedule=[1, "p"], method=method)
        with pytest.raises(ValueError, match=match):
            _trainer(tmp_path, cb, 2).fit(module, datamodule=_Data(items))

    class Plain(_Data):
        def __init__(self, items: list) -> None:
            super().__init__(items)
            self.train_dataset = items  # type: ignore[assignment]

    with pytest.raises(ValueError, match="ProxyDataset"):
        _trainer(tmp_path, _callback(method="gradcam"), 1).fit(module, datamodule=Plain(items))


def test_registered_guidance_hooks(tmp_path: Path) -> None:
    assert GUIDANCE.get("proxy_attention") is ProxyAttention
    meta = GUIDANCE.metadata("proxy_attention")
    assert meta["requires_mask"] is False and meta["needs_input_grad"] is False
    g = ProxyAttention(schedule=[2, "p", 1], method="gradcam", store="add")
    assert g.reload_dataloaders and not ProxyAttention(store="replace").reload_dataloaders
    g.check_config({"optim": {"epochs": 4}})
    with pytest.raises(ValueError, match=r"covers 4 epochs but optim\.epochs is 5"):
        g.check_config({"optim": {"epochs": 5}})
    with pytest.raises(ValueError, match="not a registered"):
        ProxyAttention(method="nope").check_config({})
    items = [(torch.zeros(1, 2, 2), 0, torch.zeros(1, 2, 2))]
    wrapped = g.wrap_train_dataset(items)
    assert isinstance(wrapped, ProxyDataset) and g.wrap_train_dataset(wrapped) is wrapped
    (cb,) = g.callbacks(tmp_path)
    assert cb.figure_dir == tmp_path / "figures" / "proxy_attention"
    x = torch.rand(2, 1, 4, 4)
    assert (
        g.loss_terms(nn.Identity(), GuidedBatch(x, torch.zeros(2), torch.zeros(2, 1, 4, 4)), x)
        == {}
    )


@pytest.mark.slow
def test_engine_runs_proxy_attention_listed_as_guidance(tmp_path: Path) -> None:
    """The engine knows Proxy Attention only as an entry of ``guidance:``: it wraps the
    training set, installs the callback, and the run (resumable) writes the proxy figure."""
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import run_experiment

    raw = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "proxy",
        "run": "lenet",
        "data": {"dataset": "mnist", "max_train": 96, "max_test": 32, "batch_size": 32, "folds": 1},
        "model": {"name": "lenet"},
        "guidance": [
            {
                "name": "proxy_attention",
                "schedule": [1, "p", 1],
                "method": "gradcam",
                "subset": 1.0,
                "threshold": 0.5,
                "store": "add",
                "figure_images": 4,
            }
        ],
        "optim": {"epochs": 3, "lr": 1e-3},
        "evaluation": {"metrics": ["accuracy"]},
        "trainer": {"progress_bar": False},
    }
    cfg = load_config_dict(raw)
    metrics = run_experiment(cfg, quiet=True)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert (cfg.run_dir / "figures" / "proxy_attention" / "proxy_epoch001.png").is_file()
    state = torch.load(cfg.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (key,) = [k for k in state["callbacks"] if "ProxyAttentionCallback" in k]
    assert state["callbacks"][key]["steps_done"] == [1]
    with pytest.raises(Exception, match=r"now a guidance method"):
        load_config_dict({**raw, "guidance": [], "proxy_attention": {"schedule": [1, "p", 1]}})
