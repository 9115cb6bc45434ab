"""Say which row of a ragged batch is wrong, in the caller's terms rather than numpy's."""

from __future__ import annotations

from typing import Any

import numpy as np


def _shape_of(value: Any) -> list[int] | None:
    """The shape of a regular nested list of numbers, or None when it is ragged or not numbers."""
    try:
        return list(np.asarray(value, dtype=np.float64).shape)
    except (TypeError, ValueError):
        return None


def accepted_row_shapes(shape: list[int]) -> list[list[int]]:
    """Shapes one row may have: the model's, flat, and single-channel images without the channel."""
    accepted = [shape, [int(np.prod(shape))]]
    if len(shape) == 3 and shape[0] == 1:
        accepted.append(shape[1:])
    return accepted


def first_bad_row(rows: Any, shape: list[int]) -> tuple[int, str] | None:
    """(index, what is wrong) for the first row that fits none of the accepted shapes."""
    if not isinstance(rows, (list, tuple)):
        return None
    accepted = accepted_row_shapes(shape)
    flat = accepted[1][0]
    for i, row in enumerate(rows):
        got = _shape_of(row)
        if got in accepted:
            continue
        if got is None:
            return i, f"row {i} is not a regular array of numbers; expected shape {shape}"
        if len(got) == 1:
            return i, f"row {i} has {got[0]} value{'' if got[0] == 1 else 's'}, expected {flat}"
        return i, f"row {i} has shape {got}, expected {shape} (or {flat} values)"
    return None
