import itertools
import re
import secrets

from ulid import ULID

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

_PROCESS = secrets.token_hex(4)
_REQUESTS = itertools.count(1)


def mint(prefix: str) -> str:
    """A new service id: a domain prefix and a ULID, e.g. ``que_01J...``."""
    return f"{prefix}_{ULID()}"


def request_id() -> str:
    """An id for one request's log lines, e.g. ``req_9f1c2a7e-1b``: a prefix drawn when the
    process starts and a counter. Unique like a ULID where it matters (log lines), at a
    tenth of its cost: it is minted for every request."""
    return f"req_{_PROCESS}-{next(_REQUESTS):x}"


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
