"""The student registry and the argument checks every builder shares.

Builders raise `ValueError` for a bad value; `Registry.create` turns that into a `UserError` naming the
architecture, so the checks here only have to say what is wrong with the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from distill.registry import Registry

STUDENTS: Registry[nn.Module] = Registry("architecture")

# Sanity caps on what a submitted spec may ask for: a student is small by definition, and a typo such as
# depth=20000 should fail at once rather than spend minutes building modules.
MAX_WIDTH = 65_536
MAX_LAYERS = 128


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_WIDTH) -> int:
    """An int in [minimum, maximum]; bools and floats are refused (2.0 hides a typo as often as not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def check_ints(name: str, values: Any, *, allow_empty: bool) -> tuple[int, ...]:
    """A sequence of positive widths, such as hidden=(128, 64)."""
    if isinstance(values, int) and not isinstance(values, bool):
        values = (values,)  # hidden=128 is an obvious shorthand for hidden=(128,)
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if len(values) > MAX_LAYERS:
        raise ValueError(f"{name} has {len(values)} entries; at most {MAX_LAYERS} are allowed")
    return tuple(check_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def check_num_classes(value: Any) -> int:
    # A softmax over one class is constant: the student would "train" with zero loss and learn nothing.
    return check_int("num_classes", value, minimum=2, maximum=1_000_000)


def check_input_shape(value: Any) -> tuple[int, ...]:
    """The shape of one example, without the batch dimension: (F,) or (C, H, W) or any (D1, ..., Dk)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"input_shape must be a non-empty list of positive integers, got {value!r}")
    return tuple(check_int(f"input_shape[{i}]", v, maximum=1 << 24) for i, v in enumerate(value))


def check_image_shape(arch: str, value: Any) -> tuple[int, int, int]:
    """Convolutional students need (C, H, W); a flat (F,) vector has no spatial layout to convolve."""
    shape = check_input_shape(value)
    if len(shape) != 3:
        raise ValueError(
            f"{arch} needs image input of shape (C, H, W), got input_shape {shape}; "
            "use 'mlp' for flat feature vectors, or save x as (N, C, H, W)"
        )
    return shape[0], shape[1], shape[2]
