"""Where a study's trained models and checkpoints keep their bytes: the database (the default),
a folder every machine mounts, or S3-compatible object storage, chosen per study at launch.

A checkpoint of a real GPU model is hundreds of megabytes: such blobs belong in an object store,
as Optuna and MLflow keep them, not in the database every query reads. The folder and S3 stores
are Optuna's own (``optuna.artifacts.FileSystemArtifactStore``, ``Boto3ArtifactStore``); the
index of what is stored (which trial, which kind, its size, its id in the store) stays in
``gapsweep_artifacts`` (``gapsweep.storage.artifacts``), so queries never touch the store.

URLs: ``database``, ``file:///shared/gapsweep-artifacts`` (an absolute folder, the same path on
every machine) or ``s3://bucket/prefix``. S3 credentials and endpoint come from boto3's own
settings (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` for a
MinIO-style server), never from the URL, which is stored with the study.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import Engine

from gapsweep.errors import ConfigError, StorageError, StudyNotFoundError
from gapsweep.storage import queries
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.storage.url import mask_text

DATABASE = "database"
#: The study configuration key that names the store (``gapsweep.config``).
CONFIG_KEY = "artifacts"
_EXAMPLES = "database, file:///shared/gapsweep-artifacts or s3://bucket/prefix"


def canonical(url: str | None) -> str:
    """``url`` in the form stored with a study; a malformed one is a ``ConfigError``.

    Checked without touching the store (or importing boto3), so a sweep file is validated fast.
    """
    if url is None or url.strip() in ("", DATABASE):
        return DATABASE
    text = url.strip()
    shown = repr(mask_text(text))  # a URL with credentials in it is refused below, never echoed
    if text.startswith("/"):
        text = Path(text).as_uri()
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(
                f"artifact store {shown} needs an absolute folder, the same on every machine: file:///shared/gapsweep-artifacts"
            )
        return "file://" + unquote(parts.path).rstrip("/")  # a folder "my art" is stored as itself, not my%20art
    if parts.scheme == "s3":
        if "@" in parts.netloc or ":" in parts.netloc:
            raise ConfigError(
                f"artifact store {shown}: name only the bucket (s3://bucket/prefix); credentials and the endpoint "
                "go in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL_S3"
            )
        if not parts.netloc:
            raise ConfigError(f"artifact store {shown} names no bucket: s3://bucket/prefix")
        prefix = parts.path.strip("/")
        return f"s3://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    raise ConfigError(f"unknown artifact store {shown}; use {_EXAMPLES}")


@dataclass
class ArtifactStore:
    """One study's store. ``in_database``: the bytes go in the index row itself; otherwise they
    go to ``backend`` (an Optuna artifact store) under ids that start with ``prefix``."""

    url: str
    backend: Any = None
    prefix: str = ""
    #: The backend's own failures (file system, network), reported as one-line ``StorageError``s.
    errors: tuple[type[BaseException], ...] = field(default_factory=tuple)

    @property
    def in_database(self) -> bool:
        return self.backend is None

    def put(self, stem: str, data: bytes, suffix: str = "") -> str:
        """Write ``data`` under a new id (``stem``, a random part, ``suffix``) and return the id.
        Every write gets its own id, so a write cut short is never mistaken for a whole one."""
        artifact_id = f"{self.prefix}{stem}-{uuid.uuid4().hex[:16]}{suffix}"
        with self._reported("write to"):
            self.backend.write(artifact_id, io.BytesIO(data))
        return artifact_id

    def get(self, artifact_id: str) -> bytes | None:
        """The bytes under ``artifact_id``; None where the store has none (removed meanwhile)."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            with self._reported("read from"):
                reader = self.backend.open_reader(artifact_id)
                try:
                    return reader.read()
                finally:
                    reader.close()
        except ArtifactNotFound:
            return None

    def remove(self, artifact_ids: list[str]) -> None:
        """Remove the bytes behind ``artifact_ids``; ones already gone are fine."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        for artifact_id in artifact_ids:
            try:
                with self._reported("remove from"):
                    self.backend.remove(artifact_id)
            except ArtifactNotFound:
                pass

    def check(self) -> None:
        """Write, read back and remove a probe, so an unreachable or read-only store is named in
        one line before any trial runs rather than after the first trained model."""
        if self.in_database:
            return
        if self.url.startswith("file://") and not Path(self.url[len("file://"):]).is_dir():
            raise StorageError(
                f"artifact store {self.url} is not a folder on this machine; create it, or mount the shared folder there"
            )
        probe = self.put("gapsweep-probe", b"gapsweep")
        try:
            if self.get(probe) != b"gapsweep":
                raise StorageError(f"artifact store {self.url} gave back other bytes than were written")
        finally:
            self.remove([probe])

    @contextlib.contextmanager
    def _reported(self, verb: str) -> Iterator[None]:
        """The backend's own failures, as one line naming the store."""
        try:
            yield
        except self.errors as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"cannot {verb} artifact store {self.url}: {text}") from None


def open_store(url: str | None) -> ArtifactStore:
    """The store ``url`` names (see ``canonical``); S3 needs the ``s3`` extra (boto3)."""
    url = canonical(url)
    if url == DATABASE:
        return ArtifactStore(url)
    from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

    if url.startswith("file://"):
        return ArtifactStore(url, FileSystemArtifactStore(url[len("file://"):]), errors=(OSError,))
    try:
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ConfigError(f"artifact store {url} needs boto3: pip install 'gapsweep[s3]'") from None
    bucket, _, prefix = url[len("s3://"):].partition("/")
    try:
        client = boto3.client("s3")
    except (BotoCoreError, ValueError) as exc:  # e.g. AWS_ENDPOINT_URL_S3 that is not a URL
        raise StorageError(f"cannot reach artifact store {url}: {exc}") from None
    backend = Boto3ArtifactStore(bucket, client)
    return ArtifactStore(url, backend, prefix=f"{prefix}/" if prefix else "", errors=(Boto3Error, BotoCoreError, ClientError))


def study_store(engine: Engine, study: str) -> ArtifactStore:
    """The store ``study`` was launched with (the database for a study without one)."""
    try:
        config = queries.study_user_attrs(engine, study).get(CONFIG_ATTR) or {}
    except StudyNotFoundError:  # a table row with no Optuna study (tests, half-deleted studies)
        config = {}
    return open_store(config.get(CONFIG_KEY))


def artifact_name(study: str, trial_number: int, kind: str) -> str:
    """A readable id stem: the study (file-name safe), the trial and the kind."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', study)[:80]}-{trial_number}-{kind}"
