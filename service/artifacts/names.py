"""Which strings may name a model: they become URL segments and folder names."""

from __future__ import annotations

import re

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def valid_model_name(name: str) -> bool:
    """Letters, digits, '.', '_' and '-', at most 128 of them, never '..' (no path tricks)."""
    return MODEL_NAME_RE.fullmatch(name) is not None and ".." not in name
