"""The constrained scalar types that requests, events and domain state share.

msgspec matches a pattern with Python's ``re``, where ``$`` also matches before a final
newline, so ``"id\n"`` would pass ``^[A-Za-z0-9_-]{1,64}$``: every pattern ends with
``$(?!\n)``, which refuses it (and is the plain ``$`` to an ECMA-262 reader of the OpenAPI
document).
"""

from typing import Annotated

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=16_384)]
SessionID = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$(?!\n)")]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Status = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$(?!\n)")]
EntityID = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$(?!\n)")]
