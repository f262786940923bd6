"""agnostic-saliency."""
