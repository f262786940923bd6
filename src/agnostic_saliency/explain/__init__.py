"""Evidence beside the input-agnostic map: input-specific methods through Captum (``methods``),
the sanity checks of saliency maps (``sanity``), and ``explain_images``, which puts both kinds
of map side by side (its folder is written by :mod:`agnostic_saliency.output.explain`)."""

from .explainer import ExplainResult, explain_images
from .methods import METHODS, find_last_conv

__all__ = ["METHODS", "ExplainResult", "explain_images", "find_last_conv"]
