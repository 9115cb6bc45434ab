"""How a JSON value that should have been a number is described in an error message."""

from __future__ import annotations

from typing import Any


def not_a_number(value: Any) -> str:
    """What the value was instead, by JSON type only: the value itself is never echoed."""
    if isinstance(value, bool):
        return ", not true or false"
    if isinstance(value, str):
        return ', not a string (send 1.5, not "1.5")'
    if value is None:
        return ", not null"
    if isinstance(value, (list, dict)):
        return f", not {'a list' if isinstance(value, list) else 'an object'}"
    return ""
