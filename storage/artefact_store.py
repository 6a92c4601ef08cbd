"""The artefact store: evidence files in a versioned S3 bucket, streamed and hashed, via the minio SDK."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, NoReturn
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.versioningconfig import ENABLED, VersioningConfig

# minio's minimum is 5 MiB; 16 MiB keeps a 200 MB upload at 13 parts while holding one part in memory.
PART_SIZE = 16 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024
# Upload streams that cannot seek are spooled to disk above this size, never kept in memory.
_SPOOL_IN_MEMORY = 1024 * 1024

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchObject"})
# The store exists but cannot be used as configured: for a caller this is the same as "down".
_UNUSABLE_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ServiceUnavailable",
        "SlowDown",
        "InternalError",
        "RequestTimeout",
    }
)


class StoreUnavailable(Exception):
    """The object store cannot be reached or is failing; the caller answers 503 and records nothing."""


class TooLarge(Exception):
    """The upload is larger than the allowed maximum."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload exceeds {max_bytes} bytes")
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    version_id: str | None
    size: int
    last_modified: datetime | None
    is_delete_marker: bool = False


class _HashingReader:
    """Hashes and counts what is read through it and refuses to pass more than `max_bytes`."""

    def __init__(self, source: BinaryIO, max_bytes: int, expected_size: int | None = None) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._expected_size = expected_size
        self._hash = hashlib.sha256()
        self.size = 0
        # Set when the *source* raised, so an I/O error of the client's upload is not mistaken for
        # the object store being down.
        self.source_failed = False

    def read(self, size: int = -1) -> bytes:
        # Never read unbounded: one more byte than allowed is enough to know the upload is too large.
        limit = self._max_bytes - self.size + 1
        want = limit if size is None or size < 0 else min(size, limit)
        try:
            data = self._source.read(want)
        except BaseException:
            self.source_failed = True
            raise
        if not data:
            if self._expected_size is not None and self.size < self._expected_size:
                # Otherwise the SDK reports the short read as an OSError, which looks like a store outage.
                raise ValueError("upload stream changed while it was being stored")
            return b""
        self.size += len(data)
        if self.size > self._max_bytes:
            raise TooLarge(self._max_bytes)
        self._hash.update(data)
        return bytes(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        # A proxy or half-started server answering with an HTML error page.
        return True
    if isinstance(exc, S3Error):
        return exc.code in _UNUSABLE_CODES or exc.response.status >= 500
    # OSError last: socket errors that urllib3 did not wrap (e.g. a reset while streaming a body).
    return isinstance(exc, OSError)


def _raise_mapped(exc: BaseException, what: str) -> NoReturn:
    if isinstance(exc, S3Error) and exc.code in _MISSING_CODES:
        raise KeyError(what) from exc
    if _is_unavailable(exc):
        raise StoreUnavailable(f"object store unavailable during {what}: {exc}") from exc
    raise exc


class ObjectStream:
    """Iterates an object's bytes from an open GET response; closing it always frees the connection.

    A class rather than a generator because WSGI servers call `close()` on the response iterable even
    when iteration never started, and a never-started generator would not run its cleanup.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, chunk: int, what: str) -> None:
        self._response: urllib3.BaseHTTPResponse | None = response
        self._chunks = response.stream(chunk)
        self._what = what

    def __iter__(self) -> ObjectStream:
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except Exception as exc:
            self.close()
            _raise_mapped(exc, self._what)

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()
            response.release_conn()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _key_segment(value: str) -> str:
    cleaned = _UNSAFE_KEY_CHARS.sub("_", value)
    # "." and ".." are path steps for filer-backed stores such as SeaweedFS; never emit them.
    if not cleaned.strip("."):
        cleaned = "_" + cleaned
    return cleaned


class ArtefactStore:
    """Puts, verifies, streams and deletes artefact objects in one versioned bucket."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        retries: int = 1,
        region: str = "us-east-1",
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise ValueError(f"S3 endpoint must be a URL like http://host:port, got {endpoint!r}")
        self.endpoint = endpoint
        self.bucket = bucket
        # The SDK's default pool retries 5 times with long timeouts: an unreachable store would hang an
        # upload request for minutes. Fail in seconds instead; the caller answers 503.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, redirect=0, raise_on_status=False),
            maxsize=16,
        )
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            # A fixed region saves a GetBucketLocation round trip before the first request.
            region=region,
            http_client=self._http,
        )

    def close(self) -> None:
        """Close pooled connections (tests run with ResourceWarning as an error)."""
        self._http.clear()

    def __enter__(self) -> ArtefactStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ensure_bucket(self) -> None:
        """Create the bucket if missing and switch versioning on (idempotent)."""
        try:
            if not self._client.bucket_exists(self.bucket):
                try:
                    # Object lock must be chosen at creation; it lets gate evidence carry a legal hold.
                    self._client.make_bucket(self.bucket, object_lock=True)
                except S3Error as exc:
                    # Another app server won the race; that is fine.
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            if self._client.get_bucket_versioning(self.bucket).status != ENABLED:
                self._client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))
        except Exception as exc:
            _raise_mapped(exc, "ensure_bucket")

    def ping(self) -> bool:
        try:
            return bool(self._client.bucket_exists(self.bucket))
        except Exception:  # noqa: BLE001 - readiness only reports yes/no
            return False

    def put_stream(self, key: str, stream: BinaryIO, length: int, content_type: str, max_bytes: int) -> StoredObject:
        """Store `stream` (`length` bytes, or -1 if unknown) under `key` and return what was stored.

        Raises TooLarge (nothing stored), StoreUnavailable, or ValueError if the stream's size differs
        from a declared `length`.
        """
        if length > max_bytes:
            raise TooLarge(max_bytes)
        spool: BinaryIO | None = None
        try:
            if not _seekable(stream):
                spool = _spool(stream, max_bytes)
                stream = spool
            start = stream.tell()
            # First pass, local only: the SHA-256 must travel as x-amz-meta-sha256 in the request
            # headers, which the SDK sends before (multipart: while) it reads the body, so the digest has
            # to be known up front. Reading a spooled upload twice is cheap; memory stays at one chunk.
            size, digest = _hash_stream(stream, max_bytes)
            if length >= 0 and size != length:
                raise ValueError(f"stream has {size} bytes, declared {length}")
            stream.seek(start)
            reader = _HashingReader(stream, max_bytes, expected_size=size)
            try:
                result = self._client.put_object(
                    self.bucket,
                    key,
                    reader,  # type: ignore[arg-type]  # duck-typed: the SDK only calls read()
                    size,
                    content_type=content_type,
                    metadata={"sha256": digest},
                    part_size=PART_SIZE,
                    # Parallel parts are queued in memory without bound; one at a time keeps memory flat.
                    num_parallel_uploads=1,
                )
            except (TooLarge, ValueError):
                raise
            except Exception as exc:
                if reader.source_failed:
                    raise
                _raise_mapped(exc, f"put {key}")
            if reader.size != size or reader.hexdigest() != digest:
                # The source changed between the two passes; what is stored is not what was hashed.
                self._discard(key, result.version_id)
                raise ValueError("upload stream changed while it was being stored")
            return StoredObject(self.bucket, key, result.version_id, digest, size)
        finally:
            if spool is not None:
                spool.close()

    def _discard(self, key: str, version_id: str | None) -> None:
        try:
            self.delete(key, version_id)
        except StoreUnavailable:
            pass  # the sweeper removes objects no row refers to

    def stat(self, key: str, version_id: str | None) -> tuple[int, dict[str, str]]:
        """Return (size, metadata): user metadata by lower-case name sans x-amz-meta-, plus content-type."""
        try:
            info = self._client.stat_object(self.bucket, key, version_id=version_id)
        except Exception as exc:
            _raise_mapped(exc, f"stat {key}")
        metadata: dict[str, str] = {}
        for name, value in (info.metadata or {}).items():
            lowered = name.lower()
            if lowered.startswith("x-amz-meta-"):
                metadata[lowered[len("x-amz-meta-") :]] = value
        if info.content_type:
            metadata["content-type"] = info.content_type
        return int(info.size or 0), metadata

    def hash_object(self, key: str, version_id: str | None) -> tuple[int, str]:
        """Read the stored bytes back and return (size, sha256 hex): the gate check trusts nothing else."""
        digest = hashlib.sha256()
        size = 0
        with self.iter_content(key, version_id) as chunks:
            for chunk in chunks:
                size += len(chunk)
                digest.update(chunk)
        return size, digest.hexdigest()

    def iter_content(self, key: str, version_id: str | None, chunk: int = 1 << 20) -> ObjectStream:
        """Open a streaming GET now (so a missing object raises KeyError here) and iterate its bytes."""
        try:
            response = self._client.get_object(self.bucket, key, version_id=version_id)
        except Exception as exc:
            _raise_mapped(exc, f"get {key}")
        return ObjectStream(response, chunk, f"get {key}")

    def delete(self, key: str, version_id: str | None = None) -> None:
        """Delete one version permanently, or (no version) add a delete marker."""
        try:
            self._client.remove_object(self.bucket, key, version_id=version_id)
        except Exception as exc:
            _raise_mapped(exc, f"delete {key}")

    def hold(self, key: str, version_id: str | None) -> bool:
        """Put a legal hold on one version so the server refuses to delete it; False when the bucket was
        created without object lock (the app still refuses deletes of referenced versions itself)."""
        try:
            self._client.enable_object_legal_hold(self.bucket, key, version_id=version_id)
            return bool(self._client.is_object_legal_hold_enabled(self.bucket, key, version_id=version_id))
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise KeyError(key) from exc
            if _is_unavailable(exc) and exc.code not in ("AccessDenied",):
                raise StoreUnavailable(f"object store unavailable during hold {key}: {exc}") from exc
            return False
        except Exception as exc:
            _raise_mapped(exc, f"hold {key}")

    def is_held(self, key: str, version_id: str | None) -> bool:
        try:
            return bool(self._client.is_object_legal_hold_enabled(self.bucket, key, version_id=version_id))
        except S3Error:
            return False
        except Exception as exc:
            _raise_mapped(exc, f"hold status {key}")

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every version (and delete marker) under `prefix`, for the orphan sweeper."""
        try:
            listing = self._client.list_objects(
                self.bucket, prefix=prefix or None, recursive=True, include_version=True
            )
            for obj in listing:
                yield ObjectInfo(
                    key=str(obj.object_name),
                    version_id=obj.version_id if obj.version_id not in (None, "", "null") else None,
                    size=int(obj.size or 0),
                    last_modified=obj.last_modified,
                    is_delete_marker=bool(obj.is_delete_marker),
                )
        except Exception as exc:
            _raise_mapped(exc, "list")

    @staticmethod
    def new_key(contract_code: str, item_id: int, kind: str) -> str:
        """A server-chosen key; the uploader's filename never becomes part of it."""
        if isinstance(item_id, bool) or not isinstance(item_id, int) or item_id < 0:
            raise ValueError(f"item id must be a non-negative int, got {item_id!r}")
        return f"contracts/{_key_segment(contract_code)}/items/{item_id}/{_key_segment(kind)}/{uuid.uuid4()}"


def _seekable(stream: BinaryIO) -> bool:
    try:
        if not stream.seekable():
            return False
        stream.tell()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _hash_stream(stream: BinaryIO, max_bytes: int) -> tuple[int, str]:
    reader = _HashingReader(stream, max_bytes)
    while reader.read(_COPY_CHUNK):
        pass
    return reader.size, reader.hexdigest()


def _spool(stream: BinaryIO, max_bytes: int) -> BinaryIO:
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    try:
        shutil.copyfileobj(_HashingReader(stream, max_bytes), spool, _COPY_CHUNK)  # type: ignore[misc]
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool  # type: ignore[return-value]
