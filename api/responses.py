from typing import Any

import msgspec
from starlette.responses import Response

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def raw_json(body: bytes, status_code: int = 200) -> Response:
    """A body that is already JSON (assembled from stored bytes, never re-encoded)."""
    return Response(body, status_code=status_code, media_type="application/json")
