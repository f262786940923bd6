"""Evidence beside the input-agnostic map: input-specific methods through Captum (``methods``),
the sanity checks of saliency maps (``sanity``), and the ``explain`` output folder."""

from .explainer import ExplainResult, explain_images
from .folder import write_explain_folder
from .methods import METHODS, find_last_conv

__all__ = ["METHODS", "ExplainResult", "explain_images", "find_last_conv", "write_explain_folder"]
