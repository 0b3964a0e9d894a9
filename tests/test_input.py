"""Bad input the fuzzers found answered 5xx or accepted: each is refused with a 4xx and the
error shape, and stores nothing."""

import httpx


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


def test_a_body_of_invalid_utf8_is_400(api: httpx.Client) -> None:
    # A surrogate encoded as UTF-8: msgspec checks strings lazily, so it raised
    # UnicodeDecodeError (a 500) instead of a decode error.
    for body in (b'{"\xed\xa0\x80": 1}', b'{"a": "\xed\xa0\x80"}'):
        assert error_code(api.patch("/config", content=body), 400) == "INVALID_JSON"
        assert error_code(api.patch("/budget", content=body), 400) == "INVALID_JSON"
    assert api.get("/config").json() == {}
