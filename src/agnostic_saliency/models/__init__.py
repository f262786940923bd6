"""Models: specs, safe weight loading, the input spec, and the shipped zoo."""

from .architectures import ARCHITECTURES
from .loading import BUILTINS, LoadedModel, load_model, load_weights, read_class_names
from .spec import InputSpec, NormalizedModel, parse_floats, parse_shape

__all__ = [
    "ARCHITECTURES", "BUILTINS", "InputSpec", "LoadedModel", "NormalizedModel",
    "load_model", "load_weights", "parse_floats", "parse_shape", "read_class_names",
]
