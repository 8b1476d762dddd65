"""An S3-compatible bucket as a destination (``s3://bucket/prefix``), through boto3.

Endpoint and credentials come from the usual AWS sources (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``), plus
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for a non-AWS store (MinIO, Ceph, moto).

Objects larger than one part are written by multipart upload: parts of
``SHARDKV_BACKUP_S3_PART_BYTES`` (default 8 MiB; S3 wants at least 5 MiB but the last)
are sent as they fill, so memory holds one part at most; ``commit`` completes the upload and
``abort`` aborts it (the store then drops the parts). A small object is one PUT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from shardkv.backup.repository.destination import (
    READ_CHUNK_BYTES,
    Destination,
    ObjectInfo,
    Upload,
    check_name,
)
from shardkv.backup.repository.errors import (
    BackupError,
    DestinationFull,
    DestinationUnreachable,
    MissingFile,
)

PART_BYTES_ENV = "SHARDKV_BACKUP_S3_PART_BYTES"
DEFAULT_PART_BYTES = 8 << 20
MIN_PART_BYTES = 5 << 20
_FULL_CODES = {"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "InsufficientStorage"}
_UNREACHABLE_CODES = {"NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "AccessDenied", "AllAccessDisabled"}


def _part_bytes() -> int:
    raw = os.environ.get(PART_BYTES_ENV, "").strip()
    return max(MIN_PART_BYTES, int(raw)) if raw else DEFAULT_PART_BYTES


def _translate(exc: Exception, what: str) -> BackupError:
    if isinstance(exc, EndpointConnectionError):
        return DestinationUnreachable(f"cannot reach the S3 endpoint ({what}): {exc}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _FULL_CODES:
            return DestinationFull(f"the bucket refused {what}: {code}")
        if code in _UNREACHABLE_CODES:
            return DestinationUnreachable(f"S3 refused {what}: {code}: {exc}")
        return BackupError(f"S3 error on {what}: {code}: {exc}")
    return DestinationUnreachable(f"S3 failed on {what}: {exc}")


class _S3Upload(Upload):
    def __init__(self, dest: S3Destination, key: str) -> None:
        self.dest = dest
        self.key = key
        self.part_bytes = _part_bytes()
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def _call(self, method: str, what: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.dest.client, method)(Bucket=self.dest.bucket, Key=self.key,
                                                     **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, f"{what} s3://{self.dest.bucket}/{self.key}") from None

    def _send_part(self, data: bytes) -> None:
        if self.upload_id is None:
            answer = self._call("create_multipart_upload", "starting the upload of")
            self.upload_id = answer["UploadId"]
        number = len(self.parts) + 1
        try:
            answer = self._call("upload_part", "uploading a part of", UploadId=self.upload_id,
                                PartNumber=number, Body=data)
        except BackupError:
            self.abort()
            raise
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2 * self.part_bytes:
            # Keep at least one part back: the last part may be small, the others not.
            part = bytes(self.buffer[:self.part_bytes])
            del self.buffer[:self.part_bytes]
            self._send_part(part)

    def commit(self) -> None:
        if self.upload_id is None and len(self.buffer) <= self.part_bytes:
            self._call("put_object", "writing", Body=bytes(self.buffer))
            self.buffer.clear()
            return
        if len(self.buffer) > self.part_bytes:
            part = bytes(self.buffer[:self.part_bytes])
            del self.buffer[:self.part_bytes]
            self._send_part(part)
        self._send_part(bytes(self.buffer))
        self.buffer.clear()
        try:
            self._call("complete_multipart_upload", "completing the upload of",
                       UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        except BackupError:
            self.abort()
            raise

    def abort(self) -> None:
        upload_id, self.upload_id = self.upload_id, None
        self.buffer.clear()
        if upload_id is not None:
            try:
                self.dest.client.abort_multipart_upload(Bucket=self.dest.bucket, Key=self.key,
                                                        UploadId=upload_id)
            except (BotoCoreError, ClientError):
                pass  # the bucket's lifecycle rule for stale uploads is the backstop


class S3Destination(Destination):
    def __init__(self, url: str) -> None:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise BackupError(f"no bucket in {url!r} (use s3://bucket/prefix)")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                    or None)
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                        read_timeout=60)
        try:
            self.client = boto3.session.Session().client("s3", endpoint_url=endpoint,
                                                         config=config)
        except BotoCoreError as exc:
            raise DestinationUnreachable(f"cannot set up S3 for {url}: {exc}") from None

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def upload(self, name: str) -> Upload:
        return _S3Upload(self, self._key(name))

    def read_chunks(self, name: str, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        key = self._key(name)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingFile(name, f"not in s3://{self.bucket}/{self.prefix}") from None
            raise _translate(exc, f"reading s3://{self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise _translate(exc, f"reading s3://{self.bucket}/{key}") from None
        body = answer["Body"]
        try:
            yield from body.iter_chunks(chunk_bytes)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, f"reading s3://{self.bucket}/{key}") from None
        finally:
            body.close()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    found.append(ObjectInfo(obj["Key"][len(self.prefix):], int(obj["Size"]),
                                            obj["LastModified"].timestamp()))
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, f"listing s3://{self.bucket}/{self.prefix}{prefix}") from None
        return sorted(found, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, f"deleting s3://{self.bucket}/{key}") from None
