"""The one error type the serving path raises for bad requests: a status, a stable code, a message.

Messages are written for API consumers: they say what was wrong and what fits, and never carry
stack traces, file paths or internal names.
"""

from __future__ import annotations


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After (429/503)

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(code: str, message: str) -> RequestError:
    return RequestError(400, code, message)


def too_large(code: str, message: str) -> RequestError:
    return RequestError(413, code, message)


def quoted(value: object, limit: int = 64) -> str:
    """A client's value in an error message: ASCII-escaped and cut, so an error never echoes more than a few dozen
    characters of the request (a 1 MB field name would otherwise come back as a response over Lambda's 6 MB)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listed(values: list, most: int = 5) -> str:
    """The first few of a client's values, quoted, and how many more there are."""
    shown = ", ".join(quoted(value) for value in values[:most])
    return f"[{shown}{f', and {len(values) - most} more' if len(values) > most else ''}]"
