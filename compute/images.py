"""Operator images: imported by upload or from a URL, checked, and kept in the image store.

The API, the Django admin and the import task share these rules:
- the bytes go into a staging file of the image store (`.incoming/`) as they arrive, hashed
  and counted on the way, never held whole in memory; past `IMAGE_MAX_BYTES` they are refused;
- the SHA-256 of what arrived must be the one given (required for URL imports);
- the format is read from the file's own header, then confirmed by `qemu-img info` run with
  that format (`-f`), so qemu never guesses: only qcow2 and raw are accepted, and a qcow2 that
  names a backing file or an external data file is refused before qemu opens it (either can
  point the host at any file on it);
- a good file is renamed to `img-<id>.<format>` in the store (a name the portal chooses) and
  the image becomes active with `min_disk_gb` from its virtual size;
- a refused upload leaves no file and no row; a refused URL import leaves no file either, and
  its row says in `error_field`/`error_message` why, until the operator deletes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import struct
import subprocess  # noqa: S404 - qemu-img with an argument list, never a shell
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import transaction
from django.utils.translation import gettext as _

from base.errors import Invalid
from compute.models import Image, Instance, InstanceState
from tenants.access import Actor
from tenants.services import audit

log = logging.getLogger(__name__)

GIB = 1024**3
CHUNK = 1024 * 1024
STAGING = ".incoming"  # a dot name: never a valid `source_path` (validate_store_name)
ACCEPTED_FORMATS = ("qcow2", "raw")
# qemu-img reads only headers here; a crafted image must not keep it busy or eat memory.
PROBE_SECONDS = 30
PROBE_LIMITS = ["--as=1073741824", "--cpu=30"]
# Downloads: connect and per-read timeouts, and an overall deadline.
CONNECT_SECONDS = 10
READ_SECONDS = 60
DOWNLOAD_SECONDS = 6 * 3600
PROGRESS_EVERY_SECONDS = 0.5
SHA256 = re.compile(r"^(sha256:)?([0-9a-fA-F]{64})$")

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit
# Formats qemu knows that the portal does not take, by the magic at the start of the file.
OTHER_FORMATS = (
    (b"KDMV", "vmdk"),
    (b"COWD", "vmdk"),
    (b"# Disk DescriptorFile", "vmdk"),
    (b"vhdxfile", "vhdx"),
    (b"conectix", "vpc"),
    (b"QED\x00", "qed"),
    (b"LUKS\xba\xbe", "luks"),
    (b"WithoutFreeSpace", "parallels"),
    (b"WithouFreSpacExt", "parallels"),
    (b"Bochs Virtual HD Image", "bochs"),
    (b"#!/bin/sh\n#V2.0 Format", "cloop"),
    (b"<<< ", "vdi"),
)


class ImportRefused(Invalid):
    """An image that may not be imported, and the input field that is to blame."""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Facts:
    """What the checks found out about an image file."""

    format: str
    virtual_size: int
    size_bytes: int
    sha256: str


def max_bytes() -> int:
    return settings.IMAGE_MAX_BYTES


def parse_sha256(value: str | None, field: str = "sha256") -> str | None:
    """`<hex>` or `sha256:<hex>` as lower-case hex; None for nothing given."""
    if value is None or value == "":
        return None
    match = SHA256.match(value.strip())
    if not match:
        raise ImportRefused(field, _("A SHA-256 as 64 hexadecimal digits (optionally after 'sha256:')."))
    return match.group(2).lower()


def check_url(url: str, field: str = "url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImportRefused(field, _("An http:// or https:// URL with a host."))
    if any(ord(c) < 33 for c in url):
        raise ImportRefused(field, _("No spaces or control characters in the URL."))
    return url


# -- staging ----------------------------------------------------------------------------------


def store_dir() -> Path:
    return Path(settings.IMAGE_STORE)


def staging_dir() -> Path:
    directory = store_dir() / STAGING
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Staged:
    """A staging file being written: bytes are hashed and counted as they come, and refused
    (the file removed) once there are more than the limit."""

    def __init__(self, field: str, name: str | None = None):
        self.field = field
        self.path = staging_dir() / (name or f"{uuid.uuid4().hex}.part")
        self.sha = hashlib.sha256()
        self.size = 0
        self.limit = max_bytes()
        # A fixed name is a URL import's: a redelivered task starts that file afresh.
        self._fh = open(self.path, "wb" if name else "xb")  # noqa: SIM115 - closed by close()/discard()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise ImportRefused(self.field, too_large())
        self.sha.update(chunk)
        self._fh.write(chunk)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def too_large() -> str:
    return _("The image is larger than the limit of %(bytes)s bytes (IMAGE_MAX_BYTES).") % {"bytes": max_bytes()}


class StagedUpload(UploadedFile):
    """An uploaded file that is already a staging file of the image store."""

    def __init__(self, staged: Staged, name: str):
        super().__init__(file=None, name=name, content_type="application/octet-stream", size=staged.size)
        self.staged = staged


class UploadHandler(FileUploadHandler):
    """Django upload handler for image uploads: the file field `file` goes straight into a
    staging file, hashed and counted chunk by chunk; no other file field is taken.

    Only staff may make it write: the CSRF check of a session user can parse the body before
    the view's permission check has run."""

    FIELD = "file"

    def __init__(self, request=None):
        super().__init__(request)
        self.staged: Staged | None = None
        self.complete = False  # the parser found the end of the file part
        self.refusal: ImportRefused | None = None

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        if not getattr(getattr(self.request, "user", None), "is_staff", False):
            raise StopUpload(connection_reset=True)
        if field_name != self.FIELD or self.staged is not None:
            self.refusal = ImportRefused(
                field_name, _("Send one image file, in the field '%(field)s'.") % {"field": self.FIELD}
            )
            raise StopUpload(connection_reset=True)
        self.staged = Staged(self.FIELD)

    def receive_data_chunk(self, raw_data, start):
        try:
            self.staged.write(raw_data)
        except ImportRefused as exc:
            self.refusal = exc
            raise StopUpload(connection_reset=True) from None
        return None

    def file_complete(self, file_size):
        self.staged.close()
        self.complete = True
        return StagedUpload(self.staged, self.file_name or "image")

    def upload_interrupted(self):
        self.discard()

    def outcome(self) -> ImportRefused | None:
        """Why the upload cannot be imported, as far as its transfer goes."""
        if self.refusal is None and self.staged is not None and not self.complete:
            return ImportRefused(self.FIELD, _("The upload ended before the whole file arrived."))
        return self.refusal

    def discard(self) -> None:
        """Remove the staging file unless an import has taken it."""
        if self.staged is not None:
            self.staged.discard()


# -- checks -----------------------------------------------------------------------------------


def header_format(path: Path, field: str) -> str:
    """The format the file's header declares; a qcow2 that refers to other files is refused
    here, before qemu-img would open them."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(QCOW2_MAGIC):
        if len(head) < 72:
            raise ImportRefused(field, _("The qcow2 header is cut short."))
        version, backing_offset, backing_size = struct.unpack(">IQI", head[4:20])
        if backing_offset or backing_size:
            raise ImportRefused(field, _("A qcow2 image with a backing file is refused: import a whole image."))
        if version >= 3 and len(head) >= 80:
            (incompatible,) = struct.unpack(">Q", head[72:80])
            if incompatible & QCOW2_EXTERNAL_DATA_FILE:
                raise ImportRefused(field, _("A qcow2 image with an external data file is refused."))
        return "qcow2"
    for magic, name in OTHER_FORMATS:
        if head.startswith(magic):
            raise ImportRefused(field, unknown_format(name))
    if len(head) >= 68 and head[64:68] == b"\x7f\x10\xda\xbe":  # VDI signature
        raise ImportRefused(field, unknown_format("vdi"))
    return "raw"


def unknown_format(name: str) -> str:
    return _("The image format %(name)s is not accepted; only %(formats)s.") % {
        "name": repr(name),
        "formats": " and ".join(ACCEPTED_FORMATS),
    }


def qemu_img_info(path: Path, fmt: str | None, field: str) -> dict:
    """`qemu-img info --output=json`, bounded in time, memory and CPU. With `fmt`, qemu reads
    the file as that format; without, it guesses (used only to catch what the header check
    does not know)."""
    command = ["qemu-img", "info", "--output=json", "--force-share"]
    if fmt:
        command += ["-f", fmt]
    command.append(str(path))
    prlimit = shutil.which("prlimit")
    if prlimit:
        command = [prlimit, *PROBE_LIMITS, "--", *command]
    try:
        done = subprocess.run(command, capture_output=True, timeout=PROBE_SECONDS, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise ImportRefused(field, _("qemu-img took too long to read the image.")) from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise ImportRefused(
            field, _("qemu-img cannot read the image: %(reason)s") % {"reason": (reason or ["no reason"])[-1][:200]}
        )
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise ImportRefused(field, _("qemu-img gave no readable description of the image.")) from None


def inspect(path: Path, field: str) -> tuple[str, int]:
    """The image's format and virtual size, or ImportRefused naming `field`."""
    fmt = header_format(path, field)
    guessed = qemu_img_info(path, None, field).get("format")
    if guessed != fmt:
        raise ImportRefused(field, unknown_format(str(guessed)))
    info = qemu_img_info(path, fmt, field)
    if info.get("format") != fmt:
        raise ImportRefused(field, unknown_format(str(info.get("format"))))
    if any(key in info for key in ("backing-filename", "full-backing-filename", "backing-filename-format")):
        raise ImportRefused(field, _("A qcow2 image with a backing file is refused: import a whole image."))
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file") or specific.get("data-file-raw"):
        raise ImportRefused(field, _("A qcow2 image with an external data file is refused."))
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual <= 0:
        raise ImportRefused(field, _("The image has no virtual size."))
    return fmt, virtual


def check(staged: Staged, *, sha256: str | None, field: str) -> Facts:
    """Every check of a complete staging file; the file is removed when one fails."""
    try:
        actual = staged.sha.hexdigest()
        if sha256 is not None and actual != sha256:
            raise ImportRefused(
                "sha256", _("The image's SHA-256 is %(actual)s, not the one given.") % {"actual": actual}
            )
        fmt, virtual = inspect(staged.path, field)
    except BaseException:
        staged.discard()
        raise
    return Facts(format=fmt, virtual_size=virtual, size_bytes=staged.size, sha256=actual)


def _min_disk_gb(virtual_size: int) -> int:
    return max(1, math.ceil(virtual_size / GIB))


def store_name(image_id, fmt: str) -> str:
    return f"img-{image_id}.{fmt}"


def _facts_fields(image_id, facts: Facts) -> dict:
    return {
        "format": facts.format,
        "size_bytes": facts.size_bytes,
        "checksum": f"sha256:{facts.sha256}",
        "min_disk_gb": _min_disk_gb(facts.virtual_size),
        "source_path": store_name(image_id, facts.format),
        "progress_bytes": facts.size_bytes,
    }


# -- upload -----------------------------------------------------------------------------------


def import_upload(
    *,
    actor: Actor | None,
    staged: Staged,
    name: str,
    os_family: str,
    os_version: str = "",
    min_memory_mb: int = 64,
    sha256: str | None = None,
) -> Image:
    """Check an uploaded staging file and make it a public image, or refuse it leaving nothing:
    no file, no row."""
    facts = check(staged, sha256=sha256, field="file")
    image_id = uuid.uuid4()
    final = store_dir() / store_name(image_id, facts.format)
    os.replace(staged.path, final)
    try:
        with transaction.atomic():
            image = Image.objects.create(
                id=image_id,
                name=name,
                os_family=os_family,
                os_version=os_version,
                min_memory_mb=min_memory_mb,
                expected_bytes=facts.size_bytes,
                **_facts_fields(image_id, facts),
            )
            audit(actor, "image.import", tenant=None, target=str(image.pk), name=name, source="upload")
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return image


# -- URL imports ------------------------------------------------------------------------------


def start_url_import(
    *,
    actor: Actor | None,
    url: str,
    sha256: str,
    name: str,
    os_family: str,
    os_version: str = "",
    min_memory_mb: int = 64,
) -> Image:
    """A pending image, downloaded and checked by `compute.tasks.import_image` on the control
    queue once this transaction commits."""
    check_url(url)
    digest = parse_sha256(sha256)
    if digest is None:
        raise ImportRefused("sha256", _("A URL import needs the image's SHA-256."))
    with transaction.atomic():
        image = Image.objects.create(
            name=name,
            os_family=os_family,
            os_version=os_version,
            min_memory_mb=min_memory_mb,
            state=Image.State.PENDING,
            source_url=url,
            checksum=f"sha256:{digest}",
        )
        audit(actor, "image.import", tenant=None, target=str(image.pk), name=name, source="url")
        transaction.on_commit(lambda: _queue_import(str(image.pk)))
    return image


def _queue_import(image_id: str) -> None:
    from compute import tasks  # tasks imports this module

    tasks.import_image.apply_async(args=[image_id], queue=settings.CELERY_TASK_DEFAULT_QUEUE)


class Cancelled(Exception):
    """The image was deleted while it was being imported."""


def _pending(image_id):
    return Image.objects.filter(pk=image_id, state=Image.State.PENDING)


def _download(image: Image, staged: Staged) -> None:
    """Stream the URL into the staging file, noting progress on the row. A cut connection,
    an error status, a size other than the announced one, or a timeout is refused on `url`."""
    deadline = time.monotonic() + DOWNLOAD_SECONDS
    headers = {"Accept-Encoding": "identity", "User-Agent": "cloud-portal-image-import"}
    try:
        with requests.get(
            image.source_url, stream=True, timeout=(CONNECT_SECONDS, READ_SECONDS), headers=headers
        ) as response:
            if response.status_code != 200:
                raise ImportRefused(
                    "url",
                    _("The server answered %(status)s %(reason)s.")
                    % {"status": response.status_code, "reason": response.reason},
                )
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > max_bytes():
                raise ImportRefused("url", too_large())
            if not _pending(image.pk).update(expected_bytes=expected, progress_bytes=0):
                raise Cancelled
            noted = 0.0  # the first bytes are noted at once, then every PROGRESS_EVERY_SECONDS
            # read1: what has arrived, up to CHUNK, so progress moves with a slow server too
            for chunk in iter(lambda: response.raw.read1(CHUNK, decode_content=False), b""):
                staged.write(chunk)
                now = time.monotonic()
                if now > deadline:
                    raise ImportRefused(
                        "url", _("The download took longer than %(seconds)s s.") % {"seconds": DOWNLOAD_SECONDS}
                    )
                if now - noted >= PROGRESS_EVERY_SECONDS:
                    noted = now
                    if not _pending(image.pk).update(progress_bytes=staged.size):
                        raise Cancelled
            staged.close()
            if expected is not None and staged.size != expected:
                raise ImportRefused(
                    "url",
                    _("The download ended after %(size)s of %(expected)s bytes.")
                    % {"size": staged.size, "expected": expected},
                )
    except (requests.RequestException, OSError, ValueError) as exc:
        # urllib3's errors for a cut connection (ProtocolError) are not OSErrors; requests
        # wraps only some of them, so the import catches what reading the body raises.
        raise ImportRefused("url", _("The download failed: %(reason)s") % {"reason": _reason(exc)}) from None
    except Exception as exc:
        if type(exc).__module__.startswith("urllib3"):
            raise ImportRefused("url", _("The download failed: %(reason)s") % {"reason": _reason(exc)}) from None
        raise


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def run_url_import(image_id: str) -> str:
    """The import task's work: download, check, store, activate. A refusal leaves no file
    and puts the row in error naming the field; a deleted (cancelled) import leaves nothing.
    Safe to run again: a redelivered task starts the download afresh, a finished one skips."""
    image = _pending(image_id).exclude(source_url="").first()
    if image is None:
        return "skipped"
    staged = Staged("url", name=f"{image.pk}.part")
    try:
        _download(image, staged)
        facts = check(staged, sha256=parse_sha256(image.checksum), field="url")
    except Cancelled:
        staged.discard()
        return "cancelled"
    except ImportRefused as exc:
        staged.discard()
        _pending(image.pk).update(state=Image.State.ERROR, error_field=exc.field, error_message=exc.message[:500])
        log.warning("image import %s refused: %s", image.pk, exc)
        return "refused"
    except BaseException:
        staged.discard()
        raise
    final = store_dir() / store_name(image.pk, facts.format)
    os.replace(staged.path, final)
    if not _pending(image.pk).update(state=Image.State.ACTIVE, **_facts_fields(image.pk, facts)):
        final.unlink(missing_ok=True)  # deleted at the last moment
        return "cancelled"
    return "active"


# -- removal ----------------------------------------------------------------------------------


def remove_unused_file(image_id) -> bool:
    """Delete a deleted image's file from the store once no live instance needs it (a build,
    a retry or a rebuild of one still on it may upload it to a host again). Snapshots have no
    file here; they live on their host."""
    image = Image.objects.filter(pk=image_id, state=Image.State.DELETED).exclude(source_path="").first()
    if image is None:
        return False
    if Instance.objects.filter(image=image).exclude(state=InstanceState.DELETED).exists():
        return False
    # Only a file the portal named: a store file registered by hand under another name may
    # be shared by other images.
    if image.source_path not in (store_name(image.pk, fmt) for fmt in ACCEPTED_FORMATS):
        return False
    (store_dir() / image.source_path).unlink(missing_ok=True)
    return True


def remove_unused_file_of(instance_id) -> bool:
    image_id = Instance.objects.filter(pk=instance_id).values_list("image_id", flat=True).first()
    return image_id is not None and remove_unused_file(image_id)


def stage_chunks(chunks, field: str = "file") -> Staged:
    """A staging file written from an iterable of byte chunks (a file uploaded through a form)."""
    staged = Staged(field)
    try:
        for chunk in chunks:
            staged.write(chunk)
    except BaseException:
        staged.discard()
        raise
    staged.close()
    return staged
