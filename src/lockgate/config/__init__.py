"""Configuration: a typed spec that rejects unknown keys, resolved once into runtime objects.

Two steps, as TensorZero does it: ``spec`` is what the file says (validated,
nothing resolved), ``runtime`` is what the gateway runs with (secrets read,
URLs parsed, names indexed). Nothing downstream sees YAML or environment.
"""

from lockgate.config.loader import ConfigError, load_config, parse_config
from lockgate.config.runtime import DeploymentTarget, ModelEntry, RuntimeConfig, resolve
from lockgate.config.spec import GatewaySpec

__all__ = [
    "ConfigError",
    "DeploymentTarget",
    "GatewaySpec",
    "ModelEntry",
    "RuntimeConfig",
    "load_config",
    "parse_config",
    "resolve",
]
