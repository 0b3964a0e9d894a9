import re

from ulid import ULID

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def mint(prefix: str) -> str:
    """A new service id: a domain prefix and a ULID, e.g. ``que_01J...``."""
    return f"{prefix}_{ULID()}"


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
