"""The last stage: output folders of map and scan runs (tensors, PNGs, JSON, HTML reports),
written through a staging folder on top of the render primitives."""

from .explain import explain_summary, write_explain_folder
from .maps import map_summary, write_map_folder
from .scan import write_scan_folder

__all__ = ["explain_summary", "map_summary", "write_explain_folder", "write_map_folder", "write_scan_folder"]
