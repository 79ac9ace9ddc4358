"""Merge config files and command-line overrides, with one-line errors that name the culprit.

yacs reports an unknown key as ``KeyError: 'Non-existent config key: X'`` after a long
traceback, without saying which file (of a ``_BASE_`` chain) holds it; these helpers re-raise
such failures as :class:`ConfigError` naming the key and the file (or the command line).
"""

import os
import re
from typing import Any, List, Optional, Sequence

import yaml
from detectron2.config import CfgNode

__all__ = ["ConfigError", "merge_config_file", "merge_config_opts"]

_BASE_KEY = "_BASE_"
# yacs / fvcore messages that carry the full key name at the end
_KEY_PATTERNS = (
    re.compile(r"Non-existent config key: (\S+)"),
    re.compile(r"Non-existent key: (\S+)"),
    re.compile(r"for config key: (\S+)"),
)


class ConfigError(ValueError):
    """A config file or override that does not fit the config schema."""


def _key_in_message(message: str) -> Optional[str]:
    for pattern in _KEY_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1).strip("'\"")
    return None


def _has_key(tree: Any, full_key: str) -> bool:
    for part in full_key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _file_defining(path: str, full_key: str, _seen: Optional[set] = None) -> Optional[str]:
    """The file, among ``path`` and its ``_BASE_`` ancestors, that sets ``full_key``."""
    _seen = set() if _seen is None else _seen
    if path in _seen or not os.path.isfile(path):
        return None
    _seen.add(path)
    try:
        with open(path) as f:
            tree = yaml.unsafe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    if _has_key(tree, full_key):
        return path
    bases = tree.get(_BASE_KEY) if isinstance(tree, dict) else None
    for base in [bases] if isinstance(bases, str) else (bases or []):
        if not (base.startswith("/") or "://" in base):
            base = os.path.join(os.path.dirname(path), base)
        found = _file_defining(base, full_key, _seen)
        if found:
            return found
    return None


def _reason(exc: BaseException) -> str:
    # KeyError wraps its message in quotes
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def merge_config_file(cfg: CfgNode, path: str) -> None:
    """
    ``cfg.merge_from_file(path)``, raising :class:`ConfigError` with a one-line message naming
    the file (the ``_BASE_`` file that holds the key at fault) on a missing file, invalid YAML,
    an unknown key or a value of the wrong type.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist")
    try:
        cfg.merge_from_file(path)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(
            f"Config file {path!r}{line} is not valid YAML: " f"{getattr(e, 'problem', e)}"
        ) from None
    except (KeyError, ValueError, AssertionError) as e:
        reason = _reason(e)
        key = _key_in_message(reason)
        if key is None:
            raise ConfigError(f"Cannot merge config file {path!r}: {reason}") from None
        source = _file_defining(path, key) or path
        if "Non-existent" in reason:
            raise ConfigError(f"Unknown config key {key!r} in config file {source!r}") from None
        raise ConfigError(
            f"Bad value for config key {key!r} in config file {source!r}: " f"{reason}"
        ) from None


def merge_config_opts(cfg: CfgNode, opts: Sequence[str]) -> None:
    """
    ``cfg.merge_from_list(opts)`` (command-line ``KEY VALUE`` pairs), raising
    :class:`ConfigError` with a one-line message on an odd-length list, an unknown key or a
    value of the wrong type.
    """
    opts: List[str] = list(opts)
    if len(opts) % 2 != 0:
        raise ConfigError(
            f"Command-line config overrides must be KEY VALUE pairs; got an odd number of "
            f"items: {opts}"
        )
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        reason = _reason(e)
        key = _key_in_message(reason)
        if key is not None and "Non-existent" in reason:
            raise ConfigError(f"Unknown config key {key!r} given on the command line") from None
        raise ConfigError(f"Bad command-line config override: {reason}") from None
