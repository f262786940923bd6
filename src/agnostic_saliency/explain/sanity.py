"""The sanity checks for saliency maps (Adebayo et al. 2018), for the input-agnostic map and the
Captum methods alike.

*Cascading model parameter randomisation*: the model's layers are re-initialised one after the
other from the top (the logits) down, and after each the maps are compared with those of the
trained model, by Spearman rank correlation of their magnitudes and by SSIM. A map that
explains the model must change once the parameters it depends on are random. This runs through
Quantus' ``MPRT`` (``layer_order="top_down"``: every layer with ``reset_parameters``, convs,
linears and batch norms, cumulatively); only the explain functions and the 2-D SSIM are ours.

*Data randomisation*: the same comparison between a model and one of the same architecture
trained on permuted labels (:func:`model_similarity`); the training is the caller's.

References
----------
J. Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
A. Hedström et al., "Quantus: An Explainable AI Toolkit for Responsible Evaluation of Neural
Network Explanations and Beyond", JMLR 24(34), 2023.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from ..models.spec import InputSpec
from . import methods as captum_methods
from .agnostic import compute_maps

AGNOSTIC = "input-agnostic"
"""The name of our map in the sanity tables."""


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (flattened); 0 where either is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


def ssim(a: np.ndarray, b: np.ndarray, side: tuple[int, int]) -> float:
    """SSIM of two (H, W) maps, each scaled to [0, 1] first (maps have no common unit)."""
    a, b = (np.reshape(m, side).astype(np.float64) for m in (a, b))
    a, b = ((m - m.min()) / (np.ptp(m) or 1.0) for m in (a, b))
    return float(structural_similarity(a, b, data_range=1.0, win_size=min(7, *side) // 2 * 2 + 1))


def explain_function(method: str, spec: InputSpec, class_names: list[str], agnostic_settings: dict | None = None
                     ) -> Callable:
    """A Quantus ``explain_func(model, inputs, targets)`` for ``method`` (a Captum method name or
    :data:`AGNOSTIC`), returning (N, 1, H, W) magnitudes.

    The input-agnostic map does not depend on the input: every image of a class gets the same
    map, computed once per model state (cached by a fingerprint of the parameters, since Quantus
    asks for the original model's maps more than once).
    """
    cache: dict[tuple, dict[int, torch.Tensor]] = {}

    def explain(model: nn.Module, inputs, targets, **_) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long).view(-1)
        if method == AGNOSTIC:
            key = _fingerprint(model)
            if key not in cache:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=UserWarning)
                    cache[key], _ = compute_maps(model, spec, class_names, sorted(set(t.tolist())),
                                                 **(agnostic_settings or {}))
            maps = torch.stack([cache[key][int(c)].abs().sum(0) for c in t])
        else:
            maps = captum_methods.attribute(model, spec, x, t, methods=[method])[method].abs()
        return maps[:, None].numpy()

    return explain


def _fingerprint(model: nn.Module) -> tuple:
    return tuple(round(float(p.double().sum()), 6) for p in model.state_dict().values() if p.is_floating_point())


def parameter_randomisation(
    model: nn.Module,
    spec: InputSpec,
    class_names: list[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[str] = (*captum_methods.METHODS, AGNOSTIC),
    agnostic_settings: dict | None = None,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Cascading parameter randomisation, top layer first, through Quantus' ``MPRT``.

    Parameters
    ----------
    model, spec, class_names : the trained classifier (not modified: Quantus randomises a copy).
    images, labels : (N, C, H, W) pixel-space images and the classes to explain them for.
    methods : Captum method names and/or :data:`AGNOSTIC`.
    agnostic_settings : keyword arguments of ``InputAgnosticSaliency.attribute`` for our maps
        (e.g. fewer ``steps`` than the default, to keep the test affordable).
    seed : Quantus' seed for the re-initialisations.

    Returns
    -------
    ``{method: {"spearman": {layer: mean}, "ssim": {layer: mean}}}`` with the layers in the
    order they were randomised (``"original"`` first: the trained model against itself, below 1
    only for a stochastic method such as SmoothGrad).
    """
    import quantus

    side = tuple(spec.shape[-2:])
    x, y = images.float().numpy(), labels.long().numpy()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        if method == "grad-cam" and captum_methods.find_last_conv(model) is None:
            continue
        explain = explain_function(method, spec, list(class_names), agnostic_settings)
        results[method] = {}
        for name, similarity in (("spearman", _batched(spearman)), ("ssim", _batched(lambda a, b: ssim(a, b, side)))):
            metric = quantus.MPRT(similarity_func=similarity, layer_order="top_down", seed=seed, abs=True,
                                  normalise=False, disable_warnings=True, display_progressbar=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = metric(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain,
                                device="cpu", batch_size=len(x))
            results[method][name] = {layer: float(np.mean(values)) for layer, values in scores.items()}
    return results


def _batched(similarity: Callable[[np.ndarray, np.ndarray], float]) -> Callable:
    def batched(a: np.ndarray, b: np.ndarray, batched: bool = False, **_) -> np.ndarray | float:
        if not batched:
            return similarity(a, b)
        return np.array([similarity(aa, bb) for aa, bb in zip(a, b)])

    return batched


def model_similarity(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: InputSpec,
    class_names: list[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[str] = (*captum_methods.METHODS, AGNOSTIC),
    agnostic_settings: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Mean rank correlation and SSIM between the two models' maps of the same images and
    classes: the data randomisation test when ``model_b`` was trained on permuted labels, the
    twin comparison when it was trained with a trigger."""
    side = tuple(spec.shape[-2:])
    out = {}
    for method in methods:
        explain = explain_function(method, spec, list(class_names), agnostic_settings)
        a = explain(model_a, images, labels)[:, 0]
        b = explain(model_b, images, labels)[:, 0]
        out[method] = {"spearman": float(np.mean([spearman(p, q) for p, q in zip(a, b)])),
                       "ssim": float(np.mean([ssim(p, q, side) for p, q in zip(a, b)]))}
    return out
