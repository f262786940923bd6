"""agnostic-saliency: input-agnostic saliency maps of image classifiers and data-free backdoor
scans, after Akhtar & Jalwana, "Rethinking Interpretation: Input-Agnostic Saliency Mapping of
Deep Visual Classifiers", AAAI 2023.

The pipeline, one module per stage: ``method.distributions`` (sample) -> ``method.nudge`` ->
``method.integrate`` -> ``method.project`` -> ``method.scale`` -> ``method.refine``, driven by
``method.engine``; then ``metrics`` (fidelity, recognisability, anomaly), ``backdoor`` (scan) and
``report``/``render`` (files).
"""

from ._version import __version__ as __version__
from .errors import InputError
from .method.engine import InputAgnosticSaliency
from .models import InputSpec, LoadedModel, load_model
from .result import SaliencyResult

__all__ = ["InputAgnosticSaliency", "InputError", "InputSpec", "LoadedModel", "SaliencyResult", "load_model"]
