"""${NAME} interpolation in a job file, noting the values of variables that hold secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from importer.config.messages import ConfigError
from importer.redaction import Secrets

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_VARIABLE = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)
# A secret variable's value shorter than this is not hidden: short values (flags, ports,
# "date") would hide ordinary words in every message.
SHORTEST_NAMED_SECRET = 8

CREDENTIAL_PATHS = ("api.api_key", "api.api_key_file", "api.workspace_id")


def is_secret_variable(name: str) -> bool:
    return bool(_SECRET_VARIABLE.search(name))


def interpolate(
    tree: Any,
    env: Mapping[str, str],
    path: str = "",
    *,
    need_credentials: bool = True,
    secrets: Secrets | None = None,
) -> Any:
    """Replace ${NAME} in every string; missing variables are one error naming each and its key.

    Values of variables that hold secrets (the API key's, and any *KEY*, *SECRET*, *TOKEN*,
    *PASSWORD*) are added to `secrets`, shown as `${NAME}`. Without `need_credentials`
    (validate, init) a missing variable in the credentials is no error."""
    walk = _Interpolation(env, need_credentials, Secrets() if secrets is None else secrets)
    result = walk.tree(tree, path)
    if walk.missing:
        raise ConfigError(walk.secrets.scrub("\n".join(walk.missing)))
    return result


class _Interpolation:
    """One walk over a tree: the variables it lacks and the secrets it met."""

    def __init__(self, env: Mapping[str, str], need_credentials: bool, secrets: Secrets) -> None:
        self.env = env
        self.need_credentials = need_credentials
        self.secrets = secrets
        self.missing: list[str] = []

    def tree(self, tree: Any, path: str) -> Any:
        if isinstance(tree, dict):
            return {k: self.tree(v, f"{path}.{k}" if path else str(k)) for k, v in tree.items()}
        if isinstance(tree, list):
            return [self.tree(v, f"{path}[{i}]") for i, v in enumerate(tree)]
        if isinstance(tree, str):
            return _ENV_REF.sub(lambda match: self.value(match.group(1), path), tree)
        return tree

    def value(self, name: str, path: str) -> str:
        if name not in self.env:
            if self.need_credentials or path not in CREDENTIAL_PATHS:
                self.missing.append(
                    f"{path or '(top level)'}: environment variable {name} is not set"
                )
            return ""
        value = self.env[name]
        named_secret = path == "api.api_key" or is_secret_variable(name)
        if named_secret and len(value.strip()) >= SHORTEST_NAMED_SECRET:
            self.secrets.add(value, f"${{{name}}}")
        return value
