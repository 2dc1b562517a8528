"""Commands and their following as the pages and the event stream show them: the steps of a
build, start or reboot, the latest commands, and one changed instance with both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from visa.instances.schemas import InstanceOut


class ProgressStep(BaseModel):
    key: str
    label: str
    status: Literal["done", "current", "failed", "todo"]
    at: str | None = None


class ProgressOut(BaseModel):
    """The named steps of the latest build, start or reboot."""

    action: str
    steps: list[ProgressStep]
    done: int
    total: int
    failed: bool
    message: str | None
    finished: bool


class CommandOut(BaseModel):
    action: str
    state: str
    message: str | None
    created_at: str
    finished_at: str | None


class InstanceEvent(BaseModel):
    """One changed instance: the instance, its progress and its latest commands."""

    instance: InstanceOut
    progress: ProgressOut | None
    history: list[CommandOut]
    version: str | None = None
