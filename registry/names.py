"""The naming rules for models and aliases, in one place for every entry point.

A model name becomes a folder of the artifact store and a path segment of the gateway's routes, so it
is checked whole (``fullmatch``: a trailing newline or a ``/`` is not a name) wherever a name comes in:
spec loading, the registry API, and the artifact store, which also refuses any key that would leave
its root.
"""

from __future__ import annotations

import re

from registry.errors import InvalidName

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
ALIAS_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)


def check_model_name(name: object) -> str:
    """``name`` if it is a model name: letters, digits, ``_ . -``, starting alphanumeric, at most 128."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (max 128), starting alphanumeric"
        )
    return name


def check_alias(alias: object) -> str:
    """``alias`` if it is an alias: lowercase letters, digits, ``_ -``, starting with a letter, at most 64."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidName(
            f"invalid alias {alias!r}: use lowercase letters, digits, '_', '-' (max 64), starting with a letter"
        )
    return alias
