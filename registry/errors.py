"""Errors the registry raises. Each says what was asked for and what was wrong, in one line."""


class RegistryError(Exception):
    """Base class: anything the registry refuses."""


class NotFound(RegistryError, LookupError):
    """A model, version or alias that does not exist."""


class InvalidName(RegistryError, ValueError):
    """A model or alias name that does not follow the naming rule."""


class IntegrityError(RegistryError):
    """An artifact whose bytes do not match the sha256 recorded at registration."""


class UntrustedArtifact(RegistryError):
    """An artifact that would need types outside the flavor's allow-list to load."""


class FlavorNotFound(RegistryError, LookupError):
    """No installed plugin provides the flavor a version was registered with."""


class RegistryUnavailable(RegistryError, ConnectionError):
    """The registry database cannot be reached."""
