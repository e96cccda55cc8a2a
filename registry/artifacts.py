"""Artifact storage addressed by URI: a local folder by default, any fsspec URI (s3://, gs://, memory://) for scale.

Artifacts are content-addressed (``<root>/<model>/<sha256>/<filename>``): the same bytes are stored once,
and a path names exactly one content. The hash recorded at registration is checked on every read, so a
file changed after registration is refused rather than loaded.

Every segment of a key (the namespace's parts and the file name) is a plain name: letters, digits,
``_ . -``, starting with a letter or digit. ``..``, an empty segment, a backslash or an absolute path
cannot be expressed, so no key leaves the root, whatever a caller passes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from registry.errors import IntegrityError, InvalidName, NotFound

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    sha256: str
    size: int


class ArtifactStore:
    def __init__(self, root: str) -> None:
        if "://" not in root:  # a plain folder: make it absolute so URIs stay valid from any cwd
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/")
        self._fs, self._root_path = url_to_fs(self.root)

    def _uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @staticmethod
    def check_key(namespace: str, filename: str) -> None:
        """Refuse a key with any segment that is not a plain name (``..``, ``""``, ``a\\b``, ``/abs``)."""
        segments = [*str(namespace).split("/"), str(filename)]
        bad = [segment for segment in segments if not _SEGMENT.fullmatch(segment)]
        if bad:
            raise InvalidName(f"artifact key {namespace!r}/{filename!r} has invalid segment(s) "
                              f"{', '.join(map(repr, bad))}: each must be letters, digits, '_', '.', '-', "
                              "starting with a letter or digit")

    def put(self, namespace: str, filename: str, data: bytes) -> StoredArtifact:
        """Store ``data`` under ``<root>/<namespace>/<sha256>/<filename>`` (once: the same bytes are not rewritten)."""
        self.check_key(namespace, filename)
        digest = sha256_hex(data)
        uri = self._uri(namespace, digest, filename)
        fs, path = url_to_fs(uri)
        if not fs.exists(path):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.partial"
            with fs.open(tmp, "wb") as handle:
                handle.write(data)
            fs.mv(tmp, path)  # readers never see a half-written artifact
        return StoredArtifact(uri=uri, sha256=digest, size=len(data))

    @staticmethod
    def read_verified(uri: str, expected_sha256: str) -> bytes:
        """The artifact's bytes, only if they still hash to what was recorded."""
        try:
            with fsspec.open(uri, "rb") as handle:
                data = handle.read()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {uri} is missing") from exc
        actual = sha256_hex(data)
        if actual != expected_sha256:
            raise IntegrityError(
                f"artifact {uri} has sha256 {actual[:12]}..., registry recorded {expected_sha256[:12]}...: "
                "refusing to load a changed artifact"
            )
        return data
