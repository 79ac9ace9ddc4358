"""Name lookups in detectron2/fvcore registries with errors that name the config key at fault."""
from typing import Any

from fvcore.common.registry import Registry


def lookup(registry: Registry, name: str, config_key: str, what: str) -> Any:
    """
    The object registered as ``name`` in ``registry``.

    Args:
        registry: the registry to search.
        name: the registered name, as read from the config.
        config_key: the config key the name was read from, e.g. "MODEL.BACKBONE.NAME".
        what: what the registry holds, for the message, e.g. "pixel decoder".
    Raises:
        KeyError: naming the config key, the unknown name and every registered name.
    """
    if name not in registry:
        known = ", ".join(sorted(registered for registered, _ in registry))
        raise KeyError(f"{config_key}: unknown {what} {name!r}; registered: {known}")
    return registry.get(name)
