"""Answers of the gateway's REST endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConnectOut(BaseModel):
    url: str = Field(description="Websocket URL with a one-time token")
    expires_in: int
    view_only: bool
    role: str
