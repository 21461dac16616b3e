"""How a user's value appears in an error message: short, and cheap to make whatever its size."""

from __future__ import annotations

import reprlib
from typing import Any


class _BoundedRepr(reprlib.Repr):
    """reprlib with small limits: a message stays short and cheap whatever the value's size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = 60
        self.maxlong = 40
        self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a huge int is slow, and past 4300 digits an error
            return f"<{x.bit_length()}-bit int>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()


def show(value: Any) -> str:
    """A user's value as a message shows it: at most about 100 characters, in bounded time
    (a YAML document of nested aliases expands to billions of items under plain repr)."""
    return _REPR.repr(value)
