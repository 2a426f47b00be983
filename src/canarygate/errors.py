"""The gateway's error tree: each error carries its HTTP status and names what is wrong.

The core raises these in domain terms; the HTTP layer renders them as ``{"error": "..."}``.
A 4xx is the caller's mistake: counted, never logged with a traceback. A 5xx is ours: logged.
"""


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class Conflict(GatewayError):
    status = 409


class ClientClosed(GatewayError):
    """The client went away before its request was whole: nobody reads the answer, so it is
    counted as what happened (499, nginx's "client closed request"), not as a 400."""

    status = 499


class PayloadTooLarge(GatewayError):
    status = 413


class UnsupportedMediaType(GatewayError):
    status = 415


class NotReady(GatewayError):
    status = 503


class StoreUnavailable(GatewayError):
    """The shared state store is away: an action that must be written cannot be."""

    status = 503


class ModelFailure(GatewayError):
    """The model itself failed at run time (not the caller's input)."""

    status = 500


class ConfigError(Exception):
    """A configuration or model folder that cannot be served; raised at start, never per request."""
