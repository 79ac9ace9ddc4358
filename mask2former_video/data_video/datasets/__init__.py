"""Video datasets: importing this package registers them (see builtin.py)."""
from . import builtin  # noqa: F401  (registers the datasets)
from .builtin import register_all_video, ytvis_metadata
from .ytvis import load_ytvis_json, register_ytvis_instances

__all__ = ["builtin", "register_all_video", "ytvis_metadata", "load_ytvis_json", "register_ytvis_instances"]
