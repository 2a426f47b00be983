"""What each prediction protocol (V2, V1) supplies to the shared endpoint: how to decode a body
into tensors and encode an answer; and the rules for request ids."""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Protocol

import numpy as np

from canarygate.errors import BadRequest
from canarygate.http.asgi import Headers
from canarygate.runtime import ModelVersion, Tensor

MAX_REQUEST_ID = 256  # a request id becomes a response header: short, printable ASCII
# Request ids: 128 random bits as 32 hex digits, like a UUID4's, from a generator seeded by the
# OS at start. uuid4() reads os.urandom for every id, which cost 6 % of a request's CPU.
_ids = Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def usable_request_id(text: str) -> bool:
    """Whether a client's id (header or V2 body) may stand as the request id: 1 to
    ``MAX_REQUEST_ID`` printable ASCII characters, not all blank."""
    return (len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable()
            and bool(text.strip()))


def header_request_id(raw: bytes | None) -> str:
    """The client's request id header, checked ("" when there is none)."""
    if raw is None:
        return ""
    text = raw.decode("latin-1")
    if not usable_request_id(text):
        raise BadRequest(f"request id header must be 1 to {MAX_REQUEST_ID} printable ASCII "
                         "characters")
    return text


@dataclass(slots=True)
class Decoded:
    tensors: list[Tensor]
    outputs: list[str] | None  # requested output names; None for all
    body_id: str | None = None  # the request's own id field (V2), if any
    binary_outputs: frozenset[str] = frozenset()


@dataclass(slots=True)
class Encoded:
    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]


class Codec(Protocol):
    name: str

    def decode(self, body: bytes, headers: Headers, signature: ModelVersion) -> Decoded:
        """``signature``: any version of the model (all share the baseline's inputs and
        outputs)."""

    def encode(
        self,
        version: ModelVersion,
        names: tuple[str, ...],
        results: list[np.ndarray],
        decoded: Decoded,
        request_id: str,
    ) -> Encoded: ...
