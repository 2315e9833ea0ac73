"""Operator image imports: by upload and from a URL, checked before they become images.

Images are made with `qemu-img create` in tmp_path; URL imports are served by an http.server
of the test's own on 127.0.0.1. Every refusal is a 400 (or, for a URL import whose download
runs on a worker, an image in error) naming the field, and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from compute import images, services, tasks
from compute.models import Image, Instance, InstanceState
from compute.sizing import Size
from tests.conftest import actor, client_for

ADMIN_IMAGES = "/api/v1/admin/images"
UPLOAD = f"{ADMIN_IMAGES}/upload"
IMPORT = f"{ADMIN_IMAGES}/import"
META = {"name": "Debian 12", "os_family": "debian", "os_version": "12"}


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", *args], check=True, capture_output=True, timeout=30)  # noqa: S603,S607


@pytest.fixture
def made(tmp_path):
    """Image files made by qemu-img: name -> path."""
    work = tmp_path / "made"
    work.mkdir()
    files = {
        "qcow2": work / "good.qcow2",
        "raw": work / "good.raw",
        "base": work / "base.qcow2",
        "backed": work / "backed.qcow2",
        "data": work / "data.raw",
        "external": work / "external.qcow2",
        "vmdk": work / "disk.vmdk",
    }
    qemu_img("-f", "qcow2", str(files["qcow2"]), "1536M")  # 1.5 GiB virtual: needs a 2 GiB disk
    qemu_img("-f", "raw", str(files["raw"]), "1M")
    qemu_img("-f", "qcow2", str(files["base"]), "1M")
    qemu_img("-f", "qcow2", "-b", str(files["base"]), "-F", "qcow2", str(files["backed"]))
    qemu_img("-f", "qcow2", "-o", f"data_file={files['data']}", str(files["external"]), "1M")
    qemu_img("-f", "vmdk", str(files["vmdk"]), "1M")
    return files


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_contents() -> set[str]:
    """Everything in the image store, staging folder included."""
    return {str(p.relative_to(settings.IMAGE_STORE)) for p in settings.IMAGE_STORE.rglob("*") if p.is_file()}


@pytest.fixture
def ops(operator):
    return client_for(operator)


def upload(client, path: Path, **fields):
    with open(path, "rb") as fh:
        return client.post(UPLOAD, {**META, **fields, "file": fh}, format="multipart")


def assert_refused(response, field: str, *, rows_before: int) -> None:
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"], response.json()
    assert Image.objects.count() == rows_before
    assert store_contents() == set()


# -- upload -----------------------------------------------------------------------------------


def test_it_imports_an_uploaded_qcow2_with_its_checksum_format_and_min_disk(ops, made):
    response = upload(ops, made["qcow2"])

    assert response.status_code == 201, response.content
    body = response.json()
    image = Image.objects.get(pk=body["id"])
    assert (image.state, image.format, image.os_family, image.os_version) == ("active", "qcow2", "debian", "12")
    assert image.min_disk_gb == 2
    assert image.checksum == f"sha256:{sha256_of(made['qcow2'])}"
    assert image.size_bytes == made["qcow2"].stat().st_size
    assert body["progress"] == 100 and body["error"] is None
    # under a name the portal chose, and nothing else left in the store
    assert image.source_path == f"img-{image.pk}.qcow2"
    assert store_contents() == {image.source_path}
    assert (settings.IMAGE_STORE / image.source_path).read_bytes() == made["qcow2"].read_bytes()


def test_it_imports_a_raw_upload_whose_checksum_matches(ops, made):
    response = upload(ops, made["raw"], sha256=f"sha256:{sha256_of(made['raw'])}")

    assert response.status_code == 201, response.content
    image = Image.objects.get(pk=response.json()["id"])
    assert (image.format, image.min_disk_gb, image.size_bytes) == ("raw", 1, 1024 * 1024)


def test_it_refuses_an_upload_whose_checksum_differs(ops, made):
    before = Image.objects.count()
    response = upload(ops, made["raw"], sha256="0" * 64)
    assert_refused(response, "sha256", rows_before=before)


@pytest.mark.parametrize(
    ("kind", "words"),
    [("backed", "backing file"), ("external", "external data file"), ("vmdk", "'vmdk' is not accepted")],
)
def test_it_refuses_an_upload_that_refers_to_other_files_or_is_of_another_format(ops, made, kind, words):
    before = Image.objects.count()
    response = upload(ops, made[kind])
    assert_refused(response, "file", rows_before=before)
    assert words in response.json()["fields"]["file"][0]


def test_it_refuses_an_upload_larger_than_the_limit_before_reading_it(ops, made, settings):
    settings.IMAGE_MAX_BYTES = 1024 * 1024 - 1
    before = Image.objects.count()
    # the announced length is over the limit by more than a form's fields: not read at all
    response = upload(ops, made["raw"])
    assert_refused(response, "file", rows_before=before)
    assert "IMAGE_MAX_BYTES" in response.json()["detail"]


def test_it_refuses_an_upload_that_grows_past_the_limit_while_it_streams(ops, tmp_path, settings):
    settings.IMAGE_MAX_BYTES = 4096
    path = tmp_path / "small.raw"
    path.write_bytes(b"\1" * 4097)  # within the slack for form fields, so it is streamed
    before = Image.objects.count()
    response = upload(ops, path)
    assert_refused(response, "file", rows_before=before)


def test_it_refuses_an_upload_cut_short(ops, made):
    data = made["raw"].read_bytes()
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="name"\r\n\r\nCut\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="os_family"\r\n\r\ndebian\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.raw"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data[: len(data) // 2]
    )  # no closing boundary: the client went away mid-file
    before = Image.objects.count()
    response = ops.generic("POST", UPLOAD, body, content_type="multipart/form-data; boundary=XX")
    assert_refused(response, "file", rows_before=before)
    assert "ended before" in response.json()["fields"]["file"][0]


def test_it_refuses_unknown_fields_and_bad_metadata_of_an_upload(ops, made):
    before = Image.objects.count()
    response = upload(ops, made["raw"], colour="blue")
    assert_refused(response, "colour", rows_before=before)
    response = upload(ops, made["raw"], os_family="Debian Linux")
    assert_refused(response, "os_family", rows_before=before)
    response = ops.post(UPLOAD, META, format="multipart")
    assert_refused(response, "file", rows_before=before)


def test_it_lets_only_operators_upload_and_writes_nothing_for_others(api, alice, tenant_a, made):
    before = Image.objects.count()
    with open(made["raw"], "rb") as fh:
        response = client_for(alice).post(UPLOAD, {**META, "file": fh}, format="multipart")
    assert response.status_code == 403
    assert Image.objects.count() == before and store_contents() == set()


# -- URL imports ------------------------------------------------------------------------------


class Served:
    """What the test server answers: path -> bytes, and paths that misbehave."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.release = threading.Event()  # /slow/... waits for it half-way
        self.halfway = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        served: Served = self.server.served
        kind, _, name = self.path.strip("/").partition("/")
        data = served.files.get(name)
        if kind == "error" or data is None:
            self.send_error(500 if kind == "error" else 404)
            return
        self.send_response(200)
        if kind != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "cut":  # half the body, then the connection goes
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if kind == "slow":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            served.halfway.set()
            served.release.wait(30)
            self.wfile.write(data[len(data) // 2 :])
            return
        self.wfile.write(data)
        if kind == "nolength":
            self.close_connection = True


@pytest.fixture
def web(made):
    """An http server on 127.0.0.1 serving the made images: http://127.0.0.1:<port>/<kind>/<name>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.served = Served()
    for name, path in made.items():
        server.served.files[name] = path.read_bytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, server.served
    server.served.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def import_body(url: str, sha: str, **more) -> dict:
    return {**META, "url": url, "sha256": sha, **more}


def test_it_imports_an_image_from_a_url_on_a_worker(ops, made, web, eager):
    base, _served = web
    response = ops.post(IMPORT, import_body(f"{base}/ok/qcow2", sha256_of(made["qcow2"])), format="json")

    assert response.status_code == 202, response.content
    assert response.json()["state"] == "pending"
    image = Image.objects.get(pk=response.json()["id"])
    assert (image.state, image.format, image.min_disk_gb) == ("active", "qcow2", 2)
    assert image.source_url == f"{base}/ok/qcow2"
    assert store_contents() == {image.source_path}
    assert ops.get(f"{ADMIN_IMAGES}/{image.pk}").json()["progress"] == 100


def test_it_imports_from_a_server_that_gives_no_length(made, web, db):
    base, _served = web
    image = images.start_url_import(actor=None, url=f"{base}/nolength/raw", sha256=sha256_of(made["raw"]), **META)
    assert images.run_url_import(str(image.pk)) == "active"
    image.refresh_from_db()
    assert (image.format, image.size_bytes, image.expected_bytes) == ("raw", 1024 * 1024, None)


def refused_import(base: str, path: str, sha: str) -> Image:
    image = images.start_url_import(actor=None, url=f"{base}{path}", sha256=sha, **META)
    assert images.run_url_import(str(image.pk)) == "refused"
    image.refresh_from_db()
    assert image.state == Image.State.ERROR and not image.source_path
    assert store_contents() == set()  # no file, no staging file
    return image


@pytest.mark.parametrize(
    ("path", "kind", "field", "words"),
    [
        ("/ok/raw", "raw", "sha256", "not the one given"),
        ("/ok/backed", "backed", "url", "backing file"),
        ("/ok/external", "external", "url", "external data file"),
        ("/ok/vmdk", "vmdk", "url", "not accepted"),
        ("/cut/qcow2", "qcow2", "url", "download failed"),
        ("/error/qcow2", "qcow2", "url", "500"),
        ("/ok/missing", "qcow2", "url", "404"),
    ],
)
def test_it_refuses_a_url_import_and_leaves_no_file(made, web, db, path, kind, field, words):
    base, _served = web
    sha = "0" * 64 if field == "sha256" else sha256_of(made[kind])
    image = refused_import(base, path, sha)
    assert image.error_field == field
    assert words in image.error_message


def test_it_refuses_a_url_import_larger_than_the_limit(made, web, db, settings):
    base, _served = web
    settings.IMAGE_MAX_BYTES = 1024 * 1024 - 1
    # announced too large: refused before the body is read
    image = refused_import(base, "/ok/raw", sha256_of(made["raw"]))
    assert image.error_field == "url" and "IMAGE_MAX_BYTES" in image.error_message
    # not announced: refused once the bytes pass the limit
    image = refused_import(base, "/nolength/raw", sha256_of(made["raw"]))
    assert image.error_field == "url" and "IMAGE_MAX_BYTES" in image.error_message


def test_it_shows_the_error_of_a_refused_url_import_in_the_api(ops, made, web, eager):
    base, _served = web
    response = ops.post(IMPORT, import_body(f"{base}/cut/qcow2", sha256_of(made["qcow2"])), format="json")
    shown = ops.get(f"{ADMIN_IMAGES}/{response.json()['id']}").json()
    assert shown["state"] == "error"
    assert shown["error"]["field"] == "url" and "download failed" in shown["error"]["message"]
    # deleting it leaves nothing usable: gone from the operator's list
    assert ops.delete(f"{ADMIN_IMAGES}/{shown['id']}").status_code == 204
    assert shown["id"] not in {row["id"] for row in ops.get(ADMIN_IMAGES).json()["results"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x.qcow2"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": None}, "sha256"),
        ({"name": "a\x07b"}, "name"),
        ({"min_memory_mb": "512"}, "min_memory_mb"),
        ({"source_path": "x.qcow2"}, "source_path"),
    ],
)
def test_it_refuses_a_bad_url_import_request_with_a_400(ops, body, field):
    before = Image.objects.count()
    response = ops.post(IMPORT, {**import_body("http://127.0.0.1:9/x", "a" * 64), **body}, format="json")
    assert_refused(response, field, rows_before=before)


def test_it_shows_the_progress_of_a_url_import(ops, made, web, transactional_db):
    base, served = web
    image = images.start_url_import(actor=None, url=f"{base}/slow/qcow2", sha256=sha256_of(made["qcow2"]), **META)
    outcome = {}

    def work():
        try:
            outcome["result"] = tasks.import_image.apply(args=[str(image.pk)]).get()
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert served.halfway.wait(10)
        # given: half the bytes are in; the row says so within a progress interval
        for _ in range(50):
            shown = ops.get(f"{ADMIN_IMAGES}/{image.pk}").json()
            if shown["progress_bytes"]:
                break
            served.halfway.wait(0.1)
        total = made["qcow2"].stat().st_size
        assert shown["state"] == "pending"
        assert shown["expected_bytes"] == total
        assert 0 < shown["progress_bytes"] < total
        assert 0 < shown["progress"] < 100
    finally:
        served.release.set()
        worker.join(30)
    assert outcome["result"] == "active"


def test_deleting_an_import_in_progress_cancels_it_and_leaves_nothing(ops, made, web, transactional_db):
    base, served = web
    image = images.start_url_import(actor=None, url=f"{base}/slow/qcow2", sha256=sha256_of(made["qcow2"]), **META)
    outcome = {}

    def work():
        try:
            outcome["result"] = images.run_url_import(str(image.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    assert served.halfway.wait(10)
    assert ops.delete(f"{ADMIN_IMAGES}/{image.pk}").status_code == 204
    served.release.set()
    worker.join(30)
    assert outcome["result"] == "cancelled"
    assert store_contents() == set()
    assert Image.objects.get(pk=image.pk).state == Image.State.DELETED


def test_a_redelivered_import_starts_the_download_afresh(made, web, db):
    base, _served = web
    image = images.start_url_import(actor=None, url=f"{base}/ok/raw", sha256=sha256_of(made["raw"]), **META)
    # a worker killed mid-download left its staging file
    (images.staging_dir() / f"{image.pk}.part").write_bytes(b"partial")
    assert images.run_url_import(str(image.pk)) == "active"
    assert images.run_url_import(str(image.pk)) == "skipped"
    image.refresh_from_db()
    assert store_contents() == {image.source_path}


# -- deletion ---------------------------------------------------------------------------------


def test_deleting_an_unused_image_removes_its_file_from_the_store(ops, made, host, eager):
    image_id = upload(ops, made["raw"]).json()["id"]
    assert store_contents() == {f"img-{image_id}.raw"}

    assert ops.delete(f"{ADMIN_IMAGES}/{image_id}").status_code == 204

    assert Image.objects.get(pk=image_id).state == Image.State.DELETED
    assert store_contents() == set()


def test_an_image_file_stays_while_an_instance_uses_it_and_goes_with_the_last(
    ops, made, host, alice, tenant_a, flavor, eager
):
    # given: an instance built on an uploaded image
    image_id = upload(ops, made["raw"]).json()["id"]
    instance = services.instance_create(
        actor=actor(alice, tenant_a),
        request=services.CreateRequest(
            name="web-1", image_id=image_id, size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        ),
    )
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING
    # when: the image is deleted, its file stays (a retry or rebuild could need it)
    assert ops.delete(f"{ADMIN_IMAGES}/{image_id}").status_code == 204
    assert store_contents() == {f"img-{image_id}.raw"}
    # then: it goes with the instance
    services.instance_delete(actor=actor(alice, tenant_a), instance=Instance.objects.get(pk=instance.pk))
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.DELETED
    assert store_contents() == set()


def test_a_hand_placed_store_file_is_never_removed(ops, image, host, eager):
    # the `image` fixture's file was put in the store by hand under its own name
    assert ops.delete(f"{ADMIN_IMAGES}/{image.pk}").status_code == 204
    assert (settings.IMAGE_STORE / image.source_path).exists()


def test_it_shows_tenants_only_the_public_images_that_are_ready(db, api, alice, tenant_a, image):
    importing = Image.objects.create(name="Importing", state=Image.State.PENDING, source_path="importing.qcow2")
    failed = Image.objects.create(name="Failed", state=Image.State.ERROR, source_path="failed.qcow2")
    snapshot = Image.objects.create(
        name="My snapshot", state=Image.State.PENDING, visibility=Image.Visibility.PRIVATE, tenant=tenant_a
    )
    client = api(alice)

    listed = {row["id"] for row in client.get("/api/v1/images?page_size=200").json()["results"]}

    assert str(image.pk) in listed and str(snapshot.pk) in listed
    assert str(importing.pk) not in listed and str(failed.pk) not in listed
    assert client.get(f"/api/v1/images/{importing.pk}").status_code == 404
