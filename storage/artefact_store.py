"""The artefact store: evidence files in a versioned S3 bucket, streamed and hashed, via the minio SDK."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import BinaryIO, NoReturn, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.datatypes import Part
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import genheaders
from minio.retention import Retention
from minio.versioningconfig import ENABLED, VersioningConfig

# minio's minimum is 5 MiB. Larger objects go up in parts of PART_SIZE, _PARALLEL_PARTS of them at once: the
# store digests one part while the next travel, which is how the SDK's own put_object reaches its speed. Memory
# stays at most _PARALLEL_PARTS + 1 parts (those in flight and the one being read): 32 MiB.
PART_SIZE = 8 * 1024 * 1024
_PARALLEL_PARTS = 3
_COPY_CHUNK = 1024 * 1024
# Upload streams that cannot seek are spooled to disk above this size, never kept in memory.
_SPOOL_IN_MEMORY = 1024 * 1024

T = TypeVar("T")
R = TypeVar("R")
_PARALLEL_CALLS = 4  # store calls of one request in flight at once (the HTTP pool holds 16 connections)
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



class ObjectMissing(KeyError):
    """The object (or object version) asked for is not in the store. A KeyError for old callers, but catch this:
    a bare `except KeyError` also swallows programming errors."""

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
    # What the server answered for the finished upload, quotes stripped (a multipart one ends in "-<parts>").
    # Derived from the stored bytes by the server, so it is not part of what identifies the object.
    etag: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ObjectStat:
    size: int
    metadata: dict[str, str]  # user metadata by lower-case name sans x-amz-meta-, plus content-type
    etag: str | None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    version_id: str | None
    size: int
    last_modified: datetime | None
    is_delete_marker: bool = False


class _HashingReader:
    """Hashes and counts what is read through it and refuses to pass more than `max_bytes`."""

    def __init__(self, source: BinaryIO, max_bytes: int, expected_size: int | None = None,
                 digest: bool = True) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._expected_size = expected_size
        self._hash = hashlib.sha256() if digest else None
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
        if self._hash is not None:
            self._hash.update(data)
        return bytes(data)

    def hexdigest(self) -> str:
        assert self._hash is not None, "made with digest=False"
        return self._hash.hexdigest()


_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()


def _hasher() -> ThreadPoolExecutor:
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            # Created on first use, so a pre-forking server never forks a process holding threads.
            _hash_pool = ThreadPoolExecutor(2, thread_name_prefix="spool-hash")
        return _hash_pool


class HashingSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A spool file (memory, then disk) that hashes what is written to it, so that storing it needs no
    second pass to learn the SHA-256. Use it as werkzeug's upload stream factory (`for_upload`).

    Written pieces are hashed on a helper thread, a few MiB at a time, while the writer receives and writes
    the next ones (hashlib lets go of the GIL); one batch at a time, in order, so memory stays at two batches.
    The digest is only offered for plain appends from the start: anything else (seek-then-write, truncate)
    makes `written()` answer None and the store hashes the file the ordinary way.
    """

    _BATCH = 4 * 1024 * 1024

    def __init__(self, max_size: int = _SPOOL_IN_MEMORY) -> None:
        super().__init__(max_size=max_size, mode="w+b")
        self._sha = hashlib.sha256()
        self._appended = 0
        self._at_end = True  # the position is where the next appended byte goes
        self._clean = True
        self._batch: list[bytes] = []
        self._batched = 0
        self._hashing: Future[None] | None = None

    def _hash_batch(self, batch: list[bytes]) -> None:
        for piece in batch:
            self._sha.update(piece)

    def _flush_batch(self, wait: bool) -> None:
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None
        if not self._batch:
            return
        batch, self._batch, self._batched = self._batch, [], 0
        if wait:
            self._hash_batch(batch)
        else:
            self._hashing = _hasher().submit(self._hash_batch, batch)

    @classmethod
    def for_upload(cls, *_args: object, **_kwargs: object) -> HashingSpool:
        """werkzeug's `stream_factory` signature (total_content_length, content_type, filename, content_length)."""
        return cls(512 * 1024)

    def _taint(self) -> None:
        self._clean = False
        self._batch.clear()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self._at_end:
            self._taint()
        written = super().write(data)
        if self._clean:
            # Only immutable bytes may wait to be hashed; anything else is copied.
            self._batch.append(data if isinstance(data, bytes) else bytes(data))
            self._batched += written
            self._appended += written
            if self._batched >= self._BATCH:
                self._flush_batch(wait=False)
        return written

    def seek(self, offset: int, whence: int = 0) -> int:  # type: ignore[override]
        position = super().seek(offset, whence)
        self._at_end = position == self._appended
        return position

    def writelines(self, lines: list[bytes]) -> None:  # type: ignore[override]
        self._taint()
        super().writelines(lines)

    def truncate(self, size: int | None = None) -> int:  # type: ignore[override]
        self._taint()
        return super().truncate(size)

    def written(self) -> tuple[int, str] | None:
        """(size, sha256 hex) of the whole file, if every byte of it went through `write` in order."""
        self._flush_batch(wait=True)
        if not self._clean:
            return None
        position = self.tell()
        end = self.seek(0, 2)
        self.seek(position)
        if end != self._appended:
            return None
        return self._appended, self._sha.hexdigest()


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
        raise ObjectMissing(what) from exc
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
        self._first: bytes | None = None
        length = response.headers.get("Content-Length")
        # The size the store is about to send (None when it did not say).
        self.length: int | None = int(length) if length is not None and length.isdigit() else None

    def prefetch(self) -> ObjectStream:
        """Read the first chunk now, so that a store failing right after the headers shows (as ObjectMissing or
        StoreUnavailable) before the caller commits to sending the object; iteration starts with that chunk."""
        if self._first is None and self._response is not None:
            try:
                self._first = next(self._chunks)
            except StopIteration:
                self._first = b""
            except Exception as exc:
                self.close()
                _raise_mapped(exc, self._what)
        return self

    def __iter__(self) -> ObjectStream:
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        if self._first:
            first, self._first = self._first, None
            return first
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
        self._lock_seen: tuple[float, bool] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
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
        """Close pooled connections and worker threads (tests run with ResourceWarning as an error)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
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
            # The SHA-256 must travel as x-amz-meta-sha256 in the request headers, which the SDK sends before
            # (multipart: while) it reads the body, so the digest has to be known up front. A HashingSpool
            # hashed its bytes as they were written to it; any other stream gets a first pass, local only.
            known = stream.written() if isinstance(stream, HashingSpool) and start == 0 else None
            if known is not None:
                size, digest = known
                if size > max_bytes:
                    raise TooLarge(max_bytes)
            else:
                size, digest = _hash_stream(stream, max_bytes)
                stream.seek(start)
            if length >= 0 and size != length:
                raise ValueError(f"stream has {size} bytes, declared {length}")
            return self._put_hashed(key, stream, size, digest, content_type, max_bytes)
        finally:
            if spool is not None:
                spool.close()

    def streamed_put(self, max_bytes: int) -> StreamedPut:
        """An object to be written piece by piece as an upload arrives, stored while it arrives (StreamedPut)."""
        return StreamedPut(self, max_bytes)

    def _put_hashed(self, key: str, stream: BinaryIO, size: int, digest: str, content_type: str,
                    max_bytes: int) -> StoredObject:
        """Store the `size` bytes of `stream` from its position, whose SHA-256 is `digest`, with the digest as
        x-amz-meta-sha256."""
        # What is sent is hashed again on the way: the stored bytes are proven to be the hashed ones.
        reader = _HashingReader(stream, max_bytes, expected_size=size)
        try:
            version_id, etag = self._upload(key, reader, size, content_type, digest)
        except (TooLarge, ValueError):
            raise
        except Exception as exc:
            if reader.source_failed:
                raise
            _raise_mapped(exc, f"put {key}")
        if reader.size != size or reader.hexdigest() != digest:
            # The source changed between the two passes; what is stored is not what was hashed.
            self._discard(key, version_id)
            raise ValueError("upload stream changed while it was being stored")
        return StoredObject(self.bucket, key, version_id, digest, size, etag)

    def _upload(self, key: str, reader: _HashingReader, size: int, content_type: str,
                digest: str) -> tuple[str | None, str | None]:
        """PUT exactly `size` bytes read from `reader`; return the new version id and the server's ETag.

        Up to PART_SIZE it is one PUT. Above, a multipart upload with _PARALLEL_PARTS parts in flight; any failure
        aborts the upload, so no object and no stray parts remain.
        """
        if size <= PART_SIZE:
            result = self._client.put_object(
                self.bucket,
                key,
                reader,  # type: ignore[arg-type]  # duck-typed: the SDK only calls read()
                size,
                content_type=content_type,
                metadata={"sha256": digest},
                part_size=PART_SIZE,
                num_parallel_uploads=1,
            )
            return result.version_id, result.etag or None
        upload = _MultipartUpload(self._client, self.bucket, key, _object_headers(content_type, digest))
        try:
            sent = 0
            while sent < size:
                # Room first, then read: memory stays at _PARALLEL_PARTS parts in flight + the one being read.
                upload.make_room(_PARALLEL_PARTS)
                data = _read_exactly(reader, min(PART_SIZE, size - sent))
                sent += len(data)
                upload.send(partial(_identity, data))
                del data
            return upload.complete()
        except BaseException:
            upload.abort()
            raise

    def _discard(self, key: str, version_id: str | None) -> None:
        try:
            self.delete(key, version_id)
        except StoreUnavailable:
            pass  # the sweeper removes objects no row refers to

    def stat(self, key: str, version_id: str | None) -> tuple[int, dict[str, str]]:
        """Return (size, metadata): user metadata by lower-case name sans x-amz-meta-, plus content-type."""
        found = self.stat_object(key, version_id)
        return found.size, found.metadata

    def stat_object(self, key: str, version_id: str | None) -> ObjectStat:
        """Size, metadata (as `stat`) and ETag of one object version, from one HEAD request."""
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
        return ObjectStat(int(info.size or 0), metadata, info.etag or None)

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
        """Open a streaming GET now (so a missing object raises ObjectMissing here) and iterate its bytes."""
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

    def each(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`[fn(x) for x in items]` with the store round trips overlapped (a gate checks several objects, each a
        loopback or LAN round trip). Results keep the order of `items`; the first exception is raised."""
        if len(items) < 2:
            return [fn(x) for x in items]
        with self._pool_lock:
            if self._pool is None:
                # Created on first use, so a pre-forking server never forks a process holding threads.
                self._pool = ThreadPoolExecutor(max_workers=_PARALLEL_CALLS, thread_name_prefix="s3")
        return list(self._pool.map(fn, items))

    def hold(self, key: str, version_id: str | None) -> bool:
        """Put a legal hold on one version so the server refuses to delete it; False when the bucket was
        created without object lock (the app still refuses deletes of referenced versions itself). A PUT
        the server accepted is the hold; `is_held` reads it back where that matters (fsck)."""
        try:
            self._client.enable_object_legal_hold(self.bucket, key, version_id=version_id)
            return True
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectMissing(key) from exc
            if _is_unavailable(exc) and exc.code not in ("AccessDenied",):
                raise StoreUnavailable(f"object store unavailable during hold {key}: {exc}") from exc
            return False
        except Exception as exc:
            _raise_mapped(exc, f"hold {key}")

    def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with object lock, i.e. whether a held version is protected at all (in a
        bucket without it, SeaweedFS and others accept a legal hold, read it back as set, and delete anyway).
        Raises StoreUnavailable when the store cannot say (unreachable, or the credentials may not ask)."""
        try:
            self._client.get_object_lock_config(self.bucket)
            lock = True
        except S3Error as exc:
            if exc.code in _UNUSABLE_CODES or exc.response.status >= 500:
                _raise_mapped(exc, "object lock config")
            lock = False  # ObjectLockConfigurationNotFoundError, or a store without the object lock API
        except Exception as exc:
            _raise_mapped(exc, "object lock config")
        self._lock_seen = (time.monotonic(), lock)
        return lock

    def evidence_lock(self, max_age: float = 60.0) -> bool | None:
        """`object_lock_enabled`, remembered for `max_age` seconds (readiness and every admin page ask); None
        when the store cannot say right now. A bucket's lock is fixed at its creation, so this only saves calls."""
        seen = self._lock_seen
        if seen is not None and time.monotonic() - seen[0] < max_age:
            return seen[1]
        try:
            return self.object_lock_enabled()
        except StoreUnavailable:
            return None

    def put_locked(self, key: str, data: bytes, content_type: str, retain_until: datetime | None) -> StoredObject:
        """Store a small record (audit anchors) under a legal hold and, when `retain_until` is given, GOVERNANCE
        retention: nobody can delete it while the hold is on, and credentials without s3:BypassGovernanceRetention
        cannot delete it before `retain_until` even with the hold lifted. In a bucket without object lock it is
        stored unprotected (`StoredObject.etag` as usual; `is_held` tells)."""
        digest = hashlib.sha256(data).hexdigest()
        locked = self.evidence_lock() is True
        try:
            result = self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                metadata={"sha256": digest},
                retention=Retention(GOVERNANCE, retain_until) if locked and retain_until is not None else None,
                legal_hold=locked,
            )
        except Exception as exc:
            _raise_mapped(exc, f"put {key}")
        return StoredObject(self.bucket, key, result.version_id, digest, len(data), result.etag or None)

    def read_small(self, key: str, version_id: str | None, limit: int = 1 << 20) -> bytes:
        """The whole of a small object (at most `limit` bytes); ObjectMissing when it is missing."""
        out = bytearray()
        with self.iter_content(key, version_id, chunk=1 << 16) as chunks:
            for chunk in chunks:
                out += chunk
                if len(out) > limit:
                    raise ValueError(f"{key} is larger than {limit} bytes")
        return bytes(out)

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


class _MultipartUpload:
    """One S3 multipart upload whose parts are sent on worker threads, at most _PARALLEL_PARTS at once.

    The SDK's own parallel put_object leaves its threads blocked forever when the source raises mid-upload, so
    the parts are scheduled here. A part is handed over as a function producing its bytes, called on the worker:
    a part still waiting for a thread holds no memory when its bytes can be read later (StreamedPut's spool).
    Whoever made it calls `complete` or `abort` (which leaves no stray parts on the server).
    """

    def __init__(self, client: Minio, bucket: str, key: str, headers: dict[str, str | list[str] | tuple[str]]) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = client._create_multipart_upload(bucket, key, headers)
        self._pool = ThreadPoolExecutor(_PARALLEL_PARTS, thread_name_prefix="s3-part")
        self._pending: deque[Future[str]] = deque()
        self._etags: list[str] = []
        self._closed = False

    def _send_part(self, number: int, load: Callable[[], bytes]) -> str:
        return self._client._upload_part(self._bucket, self._key, load(), None, self._upload_id, number)

    def send(self, load: Callable[[], bytes]) -> None:
        """Queue the next part; `load()` returns its bytes (at least 5 MiB unless it is the last part)."""
        number = len(self._etags) + len(self._pending) + 1
        self._pending.append(self._pool.submit(self._send_part, number, load))

    def make_room(self, limit: int) -> None:
        """Wait, oldest first, until fewer than `limit` parts are queued or in flight."""
        while len(self._pending) >= limit:
            self._etags.append(self._pending.popleft().result())

    def poll(self) -> None:
        """Raise the error of any part that failed already, so a failing store stops the upload at once rather
        than after every queued part has timed out too."""
        for future in self._pending:
            if future.done() and future.exception() is not None:
                future.result()
        while self._pending and self._pending[0].done():
            self._etags.append(self._pending.popleft().result())

    def complete(self) -> tuple[str | None, str | None]:
        """Wait for every part and complete the upload: (version id, ETag) of the new object."""
        self.make_room(1)
        self._pool.shutdown(wait=True)
        parts = [Part(number, etag) for number, etag in enumerate(self._etags, start=1)]
        done = self._client._complete_multipart_upload(self._bucket, self._key, self._upload_id, parts)
        self._closed = True
        return done.version_id, done.etag or None

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        try:
            self._client._abort_multipart_upload(self._bucket, self._key, self._upload_id)
        except Exception:  # noqa: BLE001, S110 - the original failure is what the caller must hear about
            pass


class StreamedPut:
    """An object written in order, piece by piece, while an upload is still arriving: each piece is hashed and
    appended to a private temporary spool, and every complete PART_SIZE part is sent on to the store as part of
    a multipart upload (_PARALLEL_PARTS in flight, read back from the spool on the sending thread, so memory stays
    at those parts however far receiving is ahead). Receiving and storing overlap instead of following each other.

    Parts go out once `start` has named the key and there is a byte beyond them, so an object of at most
    PART_SIZE never starts a multipart upload: `finish` stores it in one PUT with its SHA-256 as x-amz-meta-sha256,
    exactly as put_stream does. A larger object cannot carry its SHA-256 in metadata (S3 takes metadata when the
    upload is created, before its first byte is known); its StoredObject carries the server's ETag instead, for
    the caller to record. The complete spool is offered (`spool`) after `end` so the caller can examine the whole
    file before deciding. Nothing is visible in the bucket unless `finish` succeeds; `abort` leaves no object and
    no stray parts, and is safe to call at any time and more than once.
    """

    def __init__(self, store: ArtefactStore, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        # Unbuffered, so whatever write() returned from is already in the file for the sending threads' pread.
        self._spool = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - closed by abort/finish
        self._sha = hashlib.sha256()
        self.size = 0
        self.key: str | None = None
        self._content_type = "application/octet-stream"
        self._upload: _MultipartUpload | None = None
        self._queued = 0  # bytes handed to the multipart upload so far
        self._ended = False
        self._done = False

    def write(self, data: bytes) -> None:
        """Append the next piece. Raises TooLarge past the limit, StoreUnavailable when sending a part failed."""
        if self._ended or self._done:
            raise ValueError("the object is complete; nothing more can be written")
        if self.size + len(data) > self._max_bytes:
            raise TooLarge(self._max_bytes)
        view = memoryview(data)
        while view:
            view = view[self._spool.write(view) :]
        self._sha.update(data)
        self.size += len(data)
        self._send_ready()

    def head(self, size: int) -> bytes:
        """The first `size` bytes written (fewer if fewer have arrived)."""
        return os.pread(self._spool.fileno(), size, 0)

    def start(self, key: str, content_type: str) -> None:
        """Name the key and the Content-Type the object is created with; from now on parts are sent."""
        if self.key is None:
            self.key, self._content_type = key, content_type
            self._send_ready()

    def end(self) -> None:
        """No more bytes: the last part is sent now, so it travels while the caller examines the spool."""
        self._ended = True
        self._send_ready()

    @property
    def spool(self) -> BinaryIO:
        """The whole file, at position 0, for reading only (after `end`)."""
        if not self._ended:
            raise ValueError("the object is still being written")
        self._spool.seek(0)
        return self._spool  # type: ignore[return-value]  # FileIO is a binary file

    @property
    def multipart(self) -> bool:
        return self._upload is not None

    def _send_ready(self) -> None:
        if self.key is None or self._done:
            return
        try:
            # The last part (1..PART_SIZE bytes) waits for `end`, so that a part goes out only with a byte
            # beyond it, and an object of at most one part never becomes a multipart upload.
            while self.size - self._queued > PART_SIZE or (self._ended and self.size > PART_SIZE
                                                           and self.size > self._queued):
                if self._upload is None:
                    self._upload = _MultipartUpload(self._store._client, self._store.bucket, self.key,
                                                    _object_headers(self._content_type, None))
                length = min(PART_SIZE, self.size - self._queued)
                self._upload.send(partial(_read_at, self._spool.fileno(), length, self._queued))
                self._queued += length
            if self._upload is not None:
                self._upload.poll()
        except Exception as exc:
            _raise_mapped(exc, f"put {self.key}")

    def finish(self, content_type: str) -> StoredObject:
        """Make the object exist and return it. `content_type` is that of a one-PUT object; a multipart one keeps
        the type `start` gave. Raises StoreUnavailable (then `abort`)."""
        if self.key is None:
            raise ValueError("start() has not named the key")
        self.end()
        digest = self._sha.hexdigest()
        if self._upload is None:
            self._spool.seek(0)
            stored = self._store._put_hashed(self.key, self._spool,  # type: ignore[arg-type]
                                             self.size, digest, content_type, self._max_bytes)
        else:
            try:
                version_id, etag = self._upload.complete()
            except Exception as exc:
                _raise_mapped(exc, f"put {self.key}")
            stored = StoredObject(self._store.bucket, self.key, version_id, digest, self.size, etag)
        self._done = True
        self._spool.close()
        return stored

    def abort(self) -> None:
        """Give up: no object, no parts left on the server, spool removed. A finished object is not touched."""
        if not self._done:
            self._done = True
            if self._upload is not None:
                self._upload.abort()
        self._spool.close()


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


def _identity(data: bytes) -> bytes:
    return data


def _object_headers(content_type: str, digest: str | None) -> dict[str, str | list[str] | tuple[str]]:
    headers = genheaders({"sha256": digest} if digest is not None else None, None, None, None, False)
    headers["Content-Type"] = content_type
    return headers


def _read_at(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    buffer = bytearray(data)
    while len(buffer) < size:
        more = os.pread(fd, size - len(buffer), offset + len(buffer))
        if not more:
            raise ValueError("the upload spool is shorter than what was written to it")
        buffer += more
    return bytes(buffer)


def _read_exactly(reader: _HashingReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) == size:
        return data
    buffer = bytearray(data)
    while len(buffer) < size:
        more = reader.read(size - len(buffer))
        if not more:
            raise ValueError("upload stream changed while it was being stored")
        buffer += more
    return bytes(buffer)


def _spool(stream: BinaryIO, max_bytes: int) -> BinaryIO:
    spool = HashingSpool(_SPOOL_IN_MEMORY)
    try:
        # The reader only enforces the size limit here: the spool hashes what is written to it.
        limited = _HashingReader(stream, max_bytes, digest=False)
        shutil.copyfileobj(limited, spool, _COPY_CHUNK)  # type: ignore[misc]
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool  # type: ignore[return-value]
