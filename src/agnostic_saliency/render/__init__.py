"""Pictures: PNG maps, labelled grids and bar charts."""

from .charts import save_bar_chart
from .images import save_grid, save_png, to_image

__all__ = ["save_bar_chart", "save_grid", "save_png", "to_image"]
