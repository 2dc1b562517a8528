"""Reading request bodies into schemas."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel

from visa.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M]) -> M:
    """The JSON body (or form) validated by ``model``; bad input raises a 400 naming the field."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object")
    else:
        data = {k: v for k, v in request.form.items() if k != "csrf_token"}
    return model.model_validate(data)
