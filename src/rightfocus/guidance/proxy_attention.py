"""Proxy Attention: CAM-guided re-weighting of misclassified training images.

Mukherjee 2023, "Proxy Attention: Comparing and Combining Augmentation with Attention"
(thesis). During a proxy step the misclassified training images are collected; for the first
``ceil(subset * N_wrong)`` of them a CAM of the predicted class is computed, min-max normalised
to [0, 1] and resized to the input; the image is un-normalised to [0, 1] and

    ``proxy = where(cam > threshold, (1 - weight * cam) * image, image)``     (rule ``"blend"``)

down-weights the pixels that led to the wrong prediction. The proxies replace (or join) the
originals in the following epochs.

This module holds the pure parts (:func:`blend_proxy`, :func:`select_misclassified`,
:func:`schedule_epochs`, :func:`make_proxies`, :func:`proxy_step`), the proxy store
:class:`ProxyDataset` and the registered guidance method :class:`ProxyAttention` (no loss
terms; it wraps the training set and contributes the Lightning callback
:class:`rightfocus.engine.callbacks.ProxyAttentionCallback` that runs the steps). The figure is
:func:`rightfocus.viz.proxy.proxy_figure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from rightfocus import hooks
from rightfocus._registry import METHODS
from rightfocus.data.transforms import Normalization, denormalize, normalize
from rightfocus.guidance.base import Guidance, GuidedBatch, check_choice, register_guidance

__all__ = [
    "CLEAR_POLICIES",
    "PROXY_RULES",
    "STORE_POLICIES",
    "ProxyAttention",
    "ProxyDataset",
    "ProxyStepResult",
    "blend_proxy",
    "find_misclassified",
    "make_proxies",
    "proxy_step",
    "schedule_epochs",
    "select_misclassified",
]

PROXY_RULES = ("blend", "mean", "min", "max")
STORE_POLICIES = ("replace", "add")
CLEAR_POLICIES = ("after_step", "end")


def blend_proxy(
    images01: Tensor,
    cams: Tensor,
    threshold: float = 0.85,
    weight: float = 0.1,
    rule: str = "blend",
) -> Tensor:
    """Proxy images from ``(B, C, H, W)`` images in [0, 1] and ``(B, 1, H, W)`` CAMs in [0, 1].

    Pixels with ``cam > threshold`` (all channels) change, the rest are kept:

    * ``"blend"`` (the thesis' rule): ``(1 - weight * cam) * image``;
    * ``"mean"`` / ``"min"`` / ``"max"`` (the thesis' image-statistics variants, §4.4.1): the
      per-image, per-channel mean / minimum / maximum of the original image (``weight`` unused).

    Example:
        >>> import torch
        >>> img = torch.full((1, 1, 1, 2), 0.5); cam = torch.tensor([[[[0.9, 0.5]]]])
        >>> blend_proxy(img, cam, threshold=0.85, weight=0.1)[0, 0, 0].tolist()
        [0.45500001311302185, 0.5]
    """
    check_choice(rule, PROXY_RULES, "rule")
    if images01.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images01.shape)}")
    if cams.dim() == 3:
        cams = cams.unsqueeze(1)
    if cams.dim() != 4 or cams.shape[1] != 1 or cams.shape[0] != images01.shape[0]:
        raise ValueError(
            f"cams must be (B, 1, H, W) for {images01.shape[0]} images, got {tuple(cams.shape)}"
        )
    if cams.shape[-2:] != images01.shape[-2:]:
        raise ValueError(
            f"cams {tuple(cams.shape)} must have the images' size {tuple(images01.shape[-2:])}; "
            "upsample them to the input first"
        )
    cams = cams.to(images01)
    selected = (cams > threshold).expand_as(images01)
    if rule == "blend":
        replacement = (1.0 - weight * cams) * images01
    elif rule == "mean":
        replacement = images01.mean(dim=(2, 3), keepdim=True).expand_as(images01)
    elif rule == "min":
        replacement = images01.amin(dim=(2, 3), keepdim=True).expand_as(images01)
    else:
        replacement = images01.amax(dim=(2, 3), keepdim=True).expand_as(images01)
    return torch.where(selected, replacement, images01)


def _check_subset(subset: float) -> None:
    if not 0.0 < subset <= 1.0:
        raise ValueError(f"subset must be in (0, 1], got {subset}")


def select_misclassified(preds: Tensor, labels: Tensor, subset: float) -> Tensor:
    """Indices (in dataset order) of the first ``ceil(subset * N_wrong)`` misclassified samples."""
    _check_subset(subset)
    wrong = torch.nonzero(preds.view(-1) != labels.view(-1).to(preds.device)).view(-1)
    return wrong[: math.ceil(subset * wrong.numel())]


def schedule_epochs(schedule: Sequence[int | str]) -> tuple[int, list[int]]:
    """Total epochs and the epochs that start with a proxy step.

    A schedule alternates numbers of plain epochs and ``"p"`` (one epoch that starts with a
    proxy step and trains on its proxies), e.g. ``[5, "p", 9, "p", 9, "p", 9, "p", 4]`` is 40
    epochs with proxy steps after 5, 15, 25 and 35 completed epochs.

    Example:
        >>> schedule_epochs([5, "p", 9, "p", 4])
        (20, [5, 15])
    """
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) or not schedule:
        raise ValueError(f"schedule must be a non-empty list like [5, 'p', 9], got {schedule!r}")
    total, proxies = 0, []
    for item in schedule:
        if isinstance(item, str) and item.lower() == "p":
            proxies.append(total)
            total += 1
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            total += item
        else:
            raise ValueError(
                f"schedule items must be epoch counts (int >= 0) or 'p' (a proxy step), got "
                f"{item!r} in {list(schedule)}"
            )
    if total == 0:
        raise ValueError(f"schedule {list(schedule)} has no epochs")
    return total, proxies


def _split_item(item: Any) -> tuple[Tensor, Any, tuple[Any, ...]]:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1], tuple(item[2:])
    raise TypeError(
        "ProxyDataset needs items (image, label, ...) from its base dataset, got "
        f"{type(item).__name__}"
    )


class ProxyDataset(Dataset):
    """Training-set wrapper holding proxy images by index (the proxy store).

    Item ``i < len(base)`` is the base item, its image replaced by the stored proxy if any
    (policy ``"replace"``). Proxies stored with policy ``"add"`` become extra items after the
    base ones (same label and mask as their source sample). Labels, masks and any other fields
    always come from the base dataset; proxies live in the base's (normalised) image space.
    """

    def __init__(self, base: Dataset) -> None:
        if not hasattr(base, "__len__") or not hasattr(base, "__getitem__"):
            raise TypeError("ProxyDataset needs a map-style dataset with __len__ and __getitem__")
        self.base = base
        self._replaced: dict[int, Tensor] = {}
        self._added: list[tuple[int, Tensor]] = []

    @property
    def base_len(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.base_len + len(self._added)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if index >= self.base_len:
            source, image = self._added[index - self.base_len]
        else:
            source, image = index, self._replaced.get(index)  # type: ignore[assignment]
        item = self.base[source]
        if image is None:
            return item
        _, label, rest = _split_item(item)
        return (image.clone(), label, *rest)

    @property
    def num_proxies(self) -> int:
        return len(self._replaced) + len(self._added)

    @property
    def proxy_indices(self) -> list[int]:
        """Base indices that have a stored proxy (replaced first, then added)."""
        return sorted(self._replaced) + [i for i, _ in self._added]

    def set_proxies(
        self, indices: Sequence[int] | Tensor, images: Tensor, store: str = "replace"
    ) -> None:
        """Store proxies for base ``indices`` with policy ``"replace"`` or ``"add"``."""
        check_choice(store, STORE_POLICIES, "store")
        idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
        if len(idx) != images.shape[0]:
            raise ValueError(f"{len(idx)} indices for {images.shape[0]} proxy images")
        if any(not 0 <= i < self.base_len for i in idx):
            raise IndexError(f"proxy indices must be in [0, {self.base_len})")
        for i, img in zip(idx, images.detach().cpu()):
            if store == "replace":
                self._replaced[i] = img.clone()
            else:
                self._added.append((i, img.clone()))

    def clear(self) -> None:
        """Drop every stored proxy: the dataset is the base dataset again."""
        self._replaced.clear()
        self._added.clear()

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only, so checkpoints load with ``weights_only=True``."""

        def pack(pairs: list[tuple[int, Tensor]]) -> tuple[Tensor, Tensor]:
            if not pairs:
                return torch.zeros(0, dtype=torch.long), torch.zeros(0)
            return torch.tensor([i for i, _ in pairs]), torch.stack([t for _, t in pairs])

        ri, rimg = pack(sorted(self._replaced.items()))
        ai, aimg = pack(self._added)
        return {
            "replaced_indices": ri,
            "replaced_images": rimg,
            "added_indices": ai,
            "added_images": aimg,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = {"replaced_indices", "replaced_images", "added_indices", "added_images"} - set(
            state
        )
        if missing:
            raise ValueError(f"ProxyDataset state is missing {sorted(missing)}")
        self.clear()
        if state["replaced_indices"].numel():
            self.set_proxies(state["replaced_indices"], state["replaced_images"], "replace")
        if state["added_indices"].numel():
            self.set_proxies(state["added_indices"], state["added_images"], "add")


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def find_misclassified(
    model: nn.Module, dataset: Dataset, batch_size: int = 128, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions on every sample, in eval mode under ``no_grad``: ``(preds, labels, wrong)``."""
    preds, labels = [], []
    with hooks.eval_mode(model), torch.no_grad():
        for batch in _loader(dataset, batch_size):
            x, y, _ = _split_item(batch)
            preds.append(model(x.to(device)).argmax(dim=1).cpu())
            labels.append(torch.as_tensor(y).view(-1).cpu())
    p, lab = torch.cat(preds), torch.cat(labels)
    return p, lab, torch.nonzero(p != lab).view(-1)


def _minmax(cam: Tensor) -> Tensor:
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (cam - lo) / (hi - lo + 1e-8)


def make_proxies(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    method: str = "gradcam_plus_plus",
    layer: nn.Module | str | None = None,
    threshold: float = 0.85,
    weight: float = 0.1,
    rule: str = "blend",
    normalization: Normalization | None = None,
) -> tuple[Tensor, Tensor]:
    """Proxies of one batch ``x`` (normalised space): ``(originals01, proxies01)`` in [0, 1].

    The CAM of ``target`` (the predicted class) is min-max normalised per image; only the
    CAM's own backward needs gradients, everything else runs under ``no_grad``.
    """
    cam_cls = METHODS.get(method)
    cams = cam_cls(layer=layer)(model, x, target).detach()
    with torch.no_grad():
        if cams.shape[1] != 1:
            cams = cams.abs().sum(dim=1, keepdim=True)
        cams = _minmax(cams)
        images01 = denormalize(x, normalization)
        return images01, blend_proxy(images01, cams, threshold, weight, rule)


@dataclass
class ProxyStepResult:
    """What one proxy step did: base indices changed, images in [0, 1] before and after."""

    indices: Tensor
    originals01: Tensor
    proxies01: Tensor
    n_wrong: int
    n_seen: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_seen / self.seconds if self.seconds > 0 else float("inf")


def proxy_step(
    model: nn.Module,
    dataset: ProxyDataset,
    *,
    method: str = "gradcam_plus_plus",
    layer: nn.Module | str | None = None,
    threshold: float = 0.85,
    weight: float = 0.1,
    subset: float = 0.2,
    rule: str = "blend",
    store: str = "replace",
    normalization: Normalization | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> ProxyStepResult:
    """One batched proxy step on the original training images; stores the proxies in ``dataset``.

    Proxies are always made from the original image (not an earlier proxy), so artefacts do
    not compound across steps (the thesis' §4.4 suggestion).
    """
    start = time.perf_counter()
    preds, labels, _ = find_misclassified(model, dataset.base, batch_size, device)
    chosen = select_misclassified(preds, labels, subset)
    originals, proxies, offset = [], [], 0
    for batch in _loader(Subset(dataset.base, chosen.tolist()), batch_size):
        x, _, _ = _split_item(batch)
        x = x.to(device)
        target = preds[chosen[offset : offset + x.shape[0]]].to(device)
        offset += x.shape[0]
        o01, p01 = make_proxies(
            model,
            x,
            target,
            method=method,
            layer=layer,
            threshold=threshold,
            weight=weight,
            rule=rule,
            normalization=normalization,
        )
        originals.append(o01.cpu())
        proxies.append(p01.cpu())
    if originals:
        proxies_t = torch.cat(proxies)
        dataset.set_proxies(chosen, normalize(proxies_t, normalization), store)
        originals_t = torch.cat(originals)
    else:
        originals_t = proxies_t = torch.zeros(0)
    return ProxyStepResult(
        chosen,
        originals_t,
        proxies_t,
        int((preds != labels).sum()),
        len(preds),
        time.perf_counter() - start,
    )


@register_guidance("proxy_attention")
class ProxyAttention(Guidance):
    """Proxy Attention: train on CAM-blended proxies of misclassified images (no loss terms).

    Mukherjee 2023, "Proxy Attention: Comparing and Combining Augmentation with Attention"
    (thesis). At the start of every epoch listed by :func:`schedule_epochs` a
    :func:`proxy_step` replaces (or joins) misclassified training images by their proxies
    ``where(cam > threshold, (1 - weight * cam) * image, image)``. In a training run the
    engine calls the hooks: :meth:`wrap_train_dataset` makes the :class:`ProxyDataset`,
    :meth:`callbacks` contributes the callback that runs the steps, saves a figure of originals
    vs proxies per step and logs ``proxy/n_wrong``, ``proxy/n_changed`` and
    ``proxy/images_per_s``; :meth:`check_config` checks the schedule against ``optim.epochs``.

    Args:
        schedule: e.g. ``[5, "p", 9, "p", 9, "p", 9, "p", 4]`` (40 epochs; ``optim.epochs`` must
            equal the schedule's total).
        method: a CAM from the attribution registry (default Grad-CAM++).
        layer: CAM target layer (dotted name in the model); default its last conv.
        threshold: CAM level above which pixels change (0.85). weight: blend weight (0.1).
        subset: fraction of the misclassified images that get a proxy (0.2).
        rule: ``"blend"``, ``"mean"``, ``"min"`` or ``"max"`` (:func:`blend_proxy`).
        store: ``"replace"`` the originals or ``"add"`` proxies as extra samples (the
            dataloaders are then rebuilt every epoch, :attr:`reload_dataloaders`).
        clear: ``"after_step"`` (each step discards the previous step's proxies) or ``"end"``
            (proxies accumulate and are cleared when fitting ends).
        batch_size: batch size of the proxy step. figure_dir: where figures go (default
            ``<run>/figures/proxy_attention``); figure_images: images per figure (0: none).
    """

    requires_mask = False

    def __init__(
        self,
        *,
        schedule: Sequence[int | str] = (5, "p", 9, "p", 9, "p", 9, "p", 4),
        method: str = "gradcam_plus_plus",
        layer: str | None = None,
        threshold: float = 0.85,
        weight: float = 0.1,
        subset: float = 0.2,
        rule: str = "blend",
        store: str = "replace",
        clear: str = "end",
        batch_size: int = 128,
        figure_dir: str | Path | None = None,
        figure_images: int = 8,
    ) -> None:
        self.total_epochs, self.proxy_epochs = schedule_epochs(list(schedule))
        check_choice(rule, PROXY_RULES, "rule")
        check_choice(store, STORE_POLICIES, "store")
        check_choice(clear, CLEAR_POLICIES, "clear")
        _check_subset(subset)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(
                f"threshold must be in [0, 1) (CAMs are min-max normalised), got {threshold}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if figure_images < 0:
            raise ValueError(f"figure_images must be >= 0, got {figure_images}")
        self.schedule = list(schedule)
        self.method, self.layer, self.rule = method, layer, rule
        self.threshold, self.weight, self.subset = float(threshold), float(weight), float(subset)
        self.store, self.clear, self.batch_size = store, clear, int(batch_size)
        self.figure_dir = None if figure_dir is None else Path(figure_dir)
        self.figure_images = int(figure_images)

    def check_method(self) -> None:
        """The CAM method must be a registered attribution method with a map output."""
        if self.method not in METHODS:
            cams = [n for n, _ in METHODS.items() if METHODS.metadata(n).get("output") == "map"]
            raise ValueError(
                f"Proxy Attention method {self.method!r} is not a registered attribution method; "
                f"CAM methods available: {', '.join(cams) or '(none)'}"
            )
        if METHODS.metadata(self.method).get("output") != "map":
            raise ValueError(f"Proxy Attention needs a CAM (a map method), not {self.method!r}")

    def check(self, model: nn.Module) -> None:
        self.check_method()

    def check_config(self, config: Mapping[str, Any]) -> None:
        self.check_method()
        epochs = (config.get("optim") or {}).get("epochs")
        if epochs is not None and int(epochs) != self.total_epochs:
            raise ValueError(
                f"proxy_attention's schedule {self.schedule} covers {self.total_epochs} epochs "
                f"but optim.epochs is {epochs}: make them equal"
            )

    def wrap_train_dataset(self, dataset: Dataset[Any]) -> Dataset[Any]:
        return dataset if isinstance(dataset, ProxyDataset) else ProxyDataset(dataset)

    def callbacks(self, run_dir: Path | None = None) -> list[Any]:
        # heavy: Lightning, only needed in a training run (keeps `import rightfocus` light)
        from rightfocus.engine.callbacks import ProxyAttentionCallback

        figure_dir = self.figure_dir
        if figure_dir is None and run_dir is not None:
            figure_dir = Path(run_dir) / "figures" / "proxy_attention"
        return [ProxyAttentionCallback(self, figure_dir=figure_dir)]

    @property
    def reload_dataloaders(self) -> bool:
        return self.store == "add"

    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        return {}

    def __repr__(self) -> str:
        return (
            f"ProxyAttention(schedule={self.schedule}, method={self.method!r}, "
            f"threshold={self.threshold}, weight={self.weight}, subset={self.subset}, "
            f"rule={self.rule!r}, store={self.store!r}, clear={self.clear!r})"
        )
