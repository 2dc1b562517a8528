"""Validation of rendered user-data with cloud-init's own schema and command."""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

SCHEMA = Path("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json")


def _missing(what: str) -> None:
    message = f"{what} is missing: apt-get install cloud-init (deploy/system-packages.txt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


def _known_keys(schema: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for definition in schema["$defs"].values():
        keys.update(definition.get("properties", {}))
    return keys


def cloud_config_part(user_data: str) -> str:
    """The #cloud-config text of plain or multipart user-data."""
    if user_data.startswith("#cloud-config"):
        return user_data
    message = email.message_from_string(user_data)
    assert message.is_multipart(), "user-data is neither #cloud-config nor multipart"
    parts = [p for p in message.get_payload() if p.get_content_type() == "text/cloud-config"]
    assert len(parts) == 1, "multipart user-data must carry exactly one cloud-config part"
    return parts[0].get_payload(decode=True).decode()


def validate(user_data: str, tmp_path: Path) -> dict[str, Any]:
    """Check against the JSON schema (plus: no top-level key the schema does not know) and
    with ``cloud-init schema --config-file``; return the parsed config."""
    if not SCHEMA.exists():
        _missing(str(SCHEMA))
    text = cloud_config_part(user_data)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    schema = _schema()
    jsonschema.validators.validator_for(schema)(schema).validate(config)
    unknown = set(config) - _known_keys(schema)
    assert not unknown, f"keys cloud-init does not know: {unknown}"
    if shutil.which("cloud-init") is None:
        _missing("cloud-init")
    path = tmp_path / "user-data.yaml"
    path.write_text(text)
    done = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Valid cloud-config" in done.stdout, done.stdout + done.stderr
    return config
