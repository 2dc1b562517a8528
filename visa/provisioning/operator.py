"""What operators see: an instance's user-data with its secrets masked (``visa instances render-userdata``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

import visa.models  # noqa: F401  (every mapped class must be known before the first query)
from visa.errors import NotFound
from visa.instances.models import Instance
from visa.provisioning.site import site_for_instance
from visa.provisioning.userdata import MASK, render_user_data


def render_for_operator(session: Session, uid: str) -> str:
    """User-data of instance ``uid`` as it would be rendered now, secrets masked (CLI)."""
    instance = session.scalars(select(Instance).where(Instance.uid == uid)).first()
    if instance is None:
        raise NotFound(f"no instance {uid[:40]!r}", field="uid")
    # The host key's private half is masked: a placeholder stands for it.
    text = render_user_data(
        instance, site=site_for_instance(instance), now=datetime.now(UTC), mask_secrets=True,
        open_data=instance.open_data_experiments, host_key=(MASK, "ssh-ed25519 (derived by visa)"),
    )
    if instance.secret and instance.secret in text:  # the masking must never miss one
        raise AssertionError("a secret survived masking")
    return text
