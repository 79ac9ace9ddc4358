"""Small helpers of the training / evaluation entry points."""

from .config_merge import ConfigError, merge_config_file, merge_config_opts

__all__ = ["ConfigError", "merge_config_file", "merge_config_opts"]
