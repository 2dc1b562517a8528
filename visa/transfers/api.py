"""REST: an instance's files (list, download, upload), streamed over SFTP as the owner.

A transfer can last long: the request's transaction ends once access is checked, so no
database connection waits on the network; the audit event is written in a unit of work of
its own when the bytes have moved.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

from flask import Blueprint, Response, request

from visa.actor import Actor
from visa.errors import InvalidInput
from visa.instances import service
from visa.openapi import doc, parse_query, respond
from visa.services import Services
from visa.transfers import service as files
from visa.transfers.schemas import (
    DownloadQuery,
    FileEntryOut,
    FileListingOut,
    FilesQuery,
    PrintedFileOut,
    PrintedOut,
    UploadOut,
    UploadQuery,
)
from visa.web.context import current_actor, db_session, services

bp = Blueprint("files_api", __name__, url_prefix="/api/instances")


def _release_connection() -> None:
    """End the request's read-only transaction now: a transfer holds no database connection."""
    db_session().commit()


@bp.get("/<uid>/files")
@doc("List a folder of the instance (default: the owner's home)", tags=["files"], query=FilesQuery,
     response=FileListingOut)
def list_files(uid: str):
    actor = current_actor()
    q = parse_query(FilesQuery)
    svc = services()
    instance = service.get_instance(actor, db_session(), uid)
    _release_connection()
    with files.open_access(actor, svc, instance, write=False) as access:
        listing = files.list_dir(actor, instance, access, q.path, svc.settings)
    return respond(FileListingOut(
        path=listing.path, roots=list(listing.roots), truncated=listing.truncated, skipped=listing.skipped,
        entries=[FileEntryOut(name=e.name, path=e.path, kind=e.kind, size=e.size, modified=e.modified)  # type: ignore[arg-type]
                 for e in listing.entries],
    ))


@bp.get("/<uid>/printed")
@doc("The PDFs printed inside the instance (its ~/PDF), newest first", tags=["files"], response=PrintedOut)
def list_printed(uid: str):
    actor = current_actor()
    svc = services()
    instance = service.get_instance(actor, db_session(), uid)
    _release_connection()
    printed = files.printed(actor, svc, instance)
    return respond(PrintedOut(folder=printed.folder, unavailable=printed.unavailable, files=[
        PrintedFileOut(name=p.name, path=p.path, size=p.size, modified=p.modified, downloadable=p.downloadable)
        for p in printed.files]))


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the UTF-8 name (RFC 6266): no byte of a hostile
    file name reaches the header unescaped."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", fallback).strip(" .") or "download"
    return f"attachment; filename=\"{fallback[:150]}\"; filename*=UTF-8''{quote(name, safe='')}"


@bp.get("/<uid>/files/content")
@doc("Download a file of the instance (Range requests resume)", tags=["files"], query=DownloadQuery,
     response="application/octet-stream", extra_responses={206: "Partial content", 416: "Range not satisfiable"})
def download(uid: str):
    actor = current_actor()
    q = parse_query(DownloadQuery)
    svc = services()
    instance = service.get_instance(actor, db_session(), uid)
    _release_connection()
    access = files.open_access(actor, svc, instance, write=False)
    try:
        dl = files.open_download(actor, instance, access, q.path, request.headers.get("Range"), svc.settings)
    except BaseException:
        access.close()
        raise
    partial = request.headers.get("Range") is not None
    body = _send(svc, actor, instance.uid, access, dl)
    resp = Response(body, status=206 if partial else 200, mimetype="application/octet-stream",
                    direct_passthrough=True)
    resp.call_on_close(access.close)  # also when the body is never read (HEAD, a client gone)
    resp.headers["Content-Length"] = str(dl.length)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["Content-Disposition"] = content_disposition(dl.name)
    resp.headers["Cache-Control"] = "private, no-store"
    # Whatever the bytes are, the browser never renders them on visa's origin.
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    if partial:
        resp.headers["Content-Range"] = f"bytes {dl.start}-{dl.start + dl.length - 1}/{dl.size}"
    return resp


def _send(svc: Services, actor: Actor, uid: str, access: files.FileAccess, dl: files.Download) -> Iterator[bytes]:
    sent = 0
    try:
        for data in files.stream(dl, svc.settings.transfers.chunk_bytes):
            sent += len(data)
            yield data
    finally:
        access.close()
        with svc.database.unit_of_work() as s:
            files.record_transfer(actor, s, svc.clock, uid, "download", dl.path, sent, offset=dl.start,
                                  complete=sent == dl.length)


@bp.put("/<uid>/files/content")
@doc("Upload a file into the instance (raw body; offset resumes)", tags=["files"], query=UploadQuery,
     body="application/octet-stream", response=UploadOut, status=201,
     extra_responses={409: "Exists, or the offset is not the file's size", 413: "Over the size limit"})
def upload(uid: str):
    actor = current_actor()
    q = parse_query(UploadQuery)
    svc = services()
    instance = service.get_instance(actor, db_session(), uid)
    _release_connection()
    # The transfer limit replaces the request-size limit of JSON bodies; checked before any write.
    request.max_content_length = svc.settings.transfers.max_upload_bytes
    length = request.content_length
    with files.open_access(actor, svc, instance, write=True) as access:
        up = files.open_upload(actor, instance, access, q.path, offset=q.offset, length=length,
                               overwrite=q.overwrite, settings=svc.settings)
        _release_connection()  # what opening the machine read of the instance, too
        written = 0
        try:
            written = files.receive(up, request.stream, svc.settings.transfers.chunk_bytes)
        finally:
            with svc.database.unit_of_work() as s:
                files.record_transfer(actor, s, svc.clock, instance.uid, "upload", up.path, written,
                                      offset=up.offset, complete=written == up.length)
    if written != up.length:
        raise InvalidInput(f"the body ended after {written} of {up.length} bytes: resume with offset="
                           f"{up.offset + written}", field="body", size=up.offset + written)
    return respond(UploadOut(path=up.path, bytes=written, size=up.offset + written), 201)
