from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode

# Bodies hold text clients wrote (entry content, config values): a browser that sniffed one
# as HTML would run what it found there. Sent with every response built here.
NOSNIFF = (b"x-content-type-options", b"nosniff")
NOSNIFF_HEADERS = {"X-Content-Type-Options": "nosniff"}  # for responses not built here
MARKDOWN = "text/markdown; charset=utf-8"


class Typed(Response):
    """A response whose declared type is the only one a browser may take it for."""

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        super().init_headers(headers)
        self.raw_headers.append(NOSNIFF)


class JSON(Typed):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def raw_json(body: bytes, status_code: int = 200) -> Response:
    """A body that is already JSON (assembled from stored bytes, never re-encoded)."""
    return Typed(body, status_code=status_code, media_type="application/json")


def markdown(text: str) -> Response:
    return Typed(text, media_type=MARKDOWN)
