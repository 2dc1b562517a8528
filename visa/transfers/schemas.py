"""File transfers in and out: the paths asked for, and listings and uploads as answered."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FilesQuery(BaseModel):
    path: str | None = Field(None, max_length=4096, description="Absolute path in the instance (default: the home)")


class DownloadQuery(BaseModel):
    path: str = Field(max_length=4096, description="Absolute path of a file in the instance")


class UploadQuery(BaseModel):
    path: str = Field(max_length=4096, description="Absolute path of the file to write in the instance")
    offset: int = Field(0, ge=0, description="Resume: the bytes the file already has (the body is the rest)")
    overwrite: bool = Field(False, description="Replace an existing regular file")


class FileEntryOut(BaseModel):
    name: str
    path: str
    kind: Literal["file", "dir", "link", "other"]
    size: int | None
    modified: int | None = Field(description="Seconds since the epoch, as the instance says")


class FileListingOut(BaseModel):
    path: str
    roots: list[str] = Field(description="Where files may be read and written: the home first")
    entries: list[FileEntryOut]
    truncated: bool = Field(description="More entries than the listing limit: the rest are not shown")
    skipped: int = Field(description="Entries left out because their names are not UTF-8")


class UploadOut(BaseModel):
    path: str
    bytes: int = Field(description="Bytes written by this request")
    size: int = Field(description="The file's size now (offset + bytes)")


class PrintedFileOut(BaseModel):
    name: str
    path: str = Field(description="For GET /api/instances/{uid}/files/content")
    size: int = Field(description="Bytes, as the instance says")
    modified: int | None = Field(description="Seconds since the epoch, as the instance says")
    downloadable: bool = Field(description="False: larger than the download limit")


class PrintedOut(BaseModel):
    folder: str | None = Field(description="Where the instance's printer writes its PDFs (the owner's ~/PDF)")
    files: list[PrintedFileOut] = Field(description="Regular *.pdf files only, newest first")
    unavailable: str | None = Field(
        None, description="Why nothing could be listed now (not running, its file server failed); null when listed"
    )
