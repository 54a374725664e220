"""Class model visualisation: the image a classifier finds most typical of a class.

Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps" (ICLR workshop), section 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rightfocus.hooks import eval_mode, frozen_parameters

__all__ = ["ClassVisualization", "class_visualization"]

_INITS = ("zeros", "noise")
_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class ClassVisualization:
    """What :func:`class_visualization` found.

    Attributes:
        images: ``(K, C, H, W)`` optimised images, one per requested class (detached).
        classes: ``(K,)`` int64 class indices, in the order requested.
        objective: ``(steps + 1, K)`` value of ``S_c(I) - l2 * ||I||^2`` at each iterate
            (row 0 is the initial image, row ``t`` the image after ``t`` updates). With
            ``jitter``, rows ``0..steps-1`` are measured on the rolled image that step's
            forward pass saw; the last row is always on the final, unrolled image.
        score: ``(steps + 1, K)`` the class score ``S_c(I)`` (logit) at the same iterates.
        logits: ``(K, num_classes)`` the model's logits on the final images.
    """

    images: Tensor
    classes: Tensor
    objective: Tensor
    score: Tensor
    logits: Tensor


def class_visualization(
    model: nn.Module,
    classes: int | Sequence[int] | Tensor,
    input_shape: Sequence[int],
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 1e-3,
    *,
    optimizer: str = "sgd",
    jitter: int = 0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clamp: tuple[float, float] | None = None,
    seed: int = 0,
    init: str = "zeros",
    noise_std: float = 0.1,
) -> ClassVisualization:
    """Find, for each class ``c``, an image maximising its L2-regularised class score.

    Simonyan et al. 2014 solve ``argmax_I S_c(I) - λ ||I||_2^2`` where ``S_c`` is the
    unnormalised score (logit) of class ``c``, not its softmax probability (which can also
    grow by lowering the other classes' scores), by gradient ascent from the zero image:
    ``I <- I + lr * (dS_c/dI - 2 λ I)``. All classes are optimised together: one image per
    class in one batch, one forward and one backward pass per step (each image's objective
    depends only on that image, so this equals optimising them one at a time).

    Optional regularisers from later work (Yosinski et al. 2015) are off by default: a
    random roll of the image by up to ``jitter`` pixels before each forward pass (one shift
    per step, shared by all images, drawn from ``seed``), a Gaussian blur every
    ``blur_every`` steps, and clamping to ``clamp = (lo, hi)`` after each step. The model is
    put in eval mode with its parameters frozen during the optimisation; its train/eval
    flags and ``requires_grad`` flags are restored afterwards, and no parameter gradient is
    accumulated. The global random state is not used.

    Args:
        model: a classifier returning ``(B, num_classes)`` logits.
        classes: one class index, a sequence of them, or a 1-d integer tensor.
        input_shape: ``(C, H, W)`` of one model input.
        steps: number of updates (positive).
        lr: learning (step) rate, finite and positive.
        l2: λ, the weight of the squared L2 norm (finite, >= 0).
        optimizer: ``"sgd"`` (plain gradient ascent, the paper's) or ``"adam"``.
        jitter: maximal random roll in pixels (0 = none).
        blur_every: blur the images every this many steps (0 = never).
        blur_sigma: standard deviation of the blur, in pixels.
        clamp: ``(lo, hi)`` pixel range enforced after each step, or None.
        seed: seed of the private generator for the noise init and the jitter.
        init: ``"zeros"`` (the paper's) or ``"noise"`` (Gaussian, std ``noise_std``).
        noise_std: standard deviation of the ``"noise"`` initialisation.

    Returns:
        A :class:`ClassVisualization` with the images and the per-step history.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> out = class_visualization(net, [0, 2], (1, 2, 2), steps=5)
        >>> tuple(out.images.shape), tuple(out.objective.shape)
        ((2, 1, 2, 2), (6, 2))
    """
    shape = _check_options(model, input_shape, steps, lr, l2, optimizer, jitter, init)
    _check_regularisers(blur_every, blur_sigma, clamp, noise_std)
    targets = _check_classes(classes)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(int(seed))
    image = torch.zeros((len(targets), *shape), dtype=dtype)
    if init == "noise":
        image = torch.randn(image.shape, generator=gen, dtype=dtype) * noise_std
    image = image.to(device).requires_grad_(True)
    targets = targets.to(device)
    opt_cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = opt_cls([image], lr=lr, maximize=True)
    objectives, scores = [], []
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        for step in range(steps):
            shift = _draw_shift(jitter, gen)
            objective, score, _ = _objective(model, image, targets, l2, shift)
            opt.zero_grad(set_to_none=True)
            objective.sum().backward()
            objectives.append(objective.detach())
            scores.append(score.detach())
            opt.step()
            with torch.no_grad():
                _regularise(image, step, blur_every, blur_sigma, clamp)
        with torch.no_grad():
            objective, score, logits = _objective(model, image, targets, l2, (0, 0))
    return ClassVisualization(
        images=image.detach(),
        classes=targets.cpu(),
        objective=torch.stack([*objectives, objective]).cpu(),
        score=torch.stack([*scores, score]).cpu(),
        logits=logits.detach(),
    )


def _objective(
    model: nn.Module, image: Tensor, classes: Tensor, l2: float, shift: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image ``S_c(I) - l2 ||I||^2``, ``S_c(I)`` and the logits, on the rolled image."""
    shown = torch.roll(image, shifts=shift, dims=(2, 3)) if shift != (0, 0) else image
    logits = model(shown)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(classes):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"class_visualization needs a model returning (B, num_classes) logits; for a batch "
            f"of {len(classes)} images it returned {got}"
        )
    n = logits.shape[1]
    if int(classes.max()) >= n:
        raise ValueError(
            f"class index {int(classes.max())} is out of range: the model has {n} classes, "
            f"so pass indices in [0, {n - 1}]"
        )
    score = logits.gather(1, classes[:, None])[:, 0]
    return score - l2 * image.pow(2).flatten(1).sum(1), score, logits


def _draw_shift(jitter: int, gen: torch.Generator) -> tuple[int, int]:
    if jitter == 0:
        return (0, 0)
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
    return (int(dy), int(dx))


def _regularise(
    image: Tensor,
    step: int,
    blur_every: int,
    blur_sigma: float,
    clamp: tuple[float, float] | None,
) -> None:
    """In-place blur (every ``blur_every`` steps) and clamp of the iterate."""
    if blur_every and (step + 1) % blur_every == 0:
        image.copy_(_gaussian_blur(image, blur_sigma))
    if clamp is not None:
        image.clamp_(clamp[0], clamp[1])


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Blur ``(B, C, H, W)`` images with a Gaussian of std ``sigma`` (reflect padding).

    The kernel spans ``±ceil(3 sigma)`` pixels, truncated to ``min(H, W) - 1`` so that
    reflect padding stays possible on small images.
    """
    # heavy: torchvision, only the blur regulariser needs it
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    radius = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
    if radius < 1:
        return images.clone()
    size = 2 * radius + 1
    return tv_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def _check_options(
    model: object,
    input_shape: Sequence[int],
    steps: int,
    lr: float,
    l2: float,
    optimizer: str,
    jitter: int,
    init: str,
) -> tuple[int, int, int]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    dims = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ValueError(
            f"input_shape must be (C, H, W) with three positive ints, got {input_shape!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    if not isinstance(l2, int | float) or not math.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ValueError(f"jitter must be an int >= 0 (pixels), got {jitter!r}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    return (dims[0], dims[1], dims[2])


def _check_regularisers(
    blur_every: int, blur_sigma: float, clamp: tuple[float, float] | None, noise_std: float
) -> None:
    if isinstance(blur_every, bool) or not isinstance(blur_every, int) or blur_every < 0:
        raise ValueError(f"blur_every must be an int >= 0 (0 = never), got {blur_every!r}")
    if not math.isfinite(blur_sigma) or blur_sigma <= 0:
        raise ValueError(f"blur_sigma must be a finite positive number, got {blur_sigma!r}")
    if clamp is not None and (
        len(clamp) != 2 or not all(math.isfinite(v) for v in clamp) or clamp[0] >= clamp[1]
    ):
        raise ValueError(f"clamp must be None or finite (lo, hi) with lo < hi, got {clamp!r}")
    if not math.isfinite(noise_std) or noise_std <= 0:
        raise ValueError(f"noise_std must be a finite positive number, got {noise_std!r}")


def _check_classes(classes: int | Sequence[int] | Tensor) -> Tensor:
    """Class indices as a non-empty ``(K,)`` int64 CPU tensor (upper bound checked later)."""
    if isinstance(classes, Tensor):
        if classes.dtype.is_floating_point or classes.is_complex() or classes.dtype == torch.bool:
            raise TypeError(f"classes must be an integer tensor, got dtype {classes.dtype}")
        out = classes.detach().reshape(-1).to("cpu", torch.int64)
    else:
        items = [classes] if isinstance(classes, int) else list(classes)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in items):
            raise TypeError(f"classes must be an int or a sequence of ints, got {classes!r}")
        out = torch.tensor(items, dtype=torch.int64)
    if out.numel() == 0:
        raise ValueError("classes is empty; pass at least one class index")
    if int(out.min()) < 0:
        raise ValueError(f"class indices must be >= 0, got {out.tolist()}")
    return out
