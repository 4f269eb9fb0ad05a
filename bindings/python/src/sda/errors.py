"""Exceptions raised by the binding: one class per ``sda_status``, each carrying the library's message."""

from __future__ import annotations

from ._ffi import Status


class SdaError(Exception):
    """A failed libsda call.

    ``code`` is the ``sda_status``; ``message`` (also ``str(error)``) is the library's text from
    ``sda_last_error_message()``; ``report`` is the ``RunReport`` of a failed guarded run, else None.
    """

    code: Status = Status.ERR_TORCH

    def __init__(self, message: str, code: int | None = None, report: object = None):
        super().__init__(message)
        if code is not None:
            self.code = _as_status(code)
        self.message = message
        self.report = report

    @property
    def status_name(self) -> str:
        """The C name of the status (``SDA_ERR_OUT_OF_MEMORY``)."""
        return f"SDA_{self.code.name}" if isinstance(self.code, Status) else f"SDA_UNKNOWN_STATUS({self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_name}: {self.message!r})"


def _as_status(code: int) -> Status | int:
    try:
        return Status(code)
    except ValueError:  # a newer library's code: keep the number
        return code


class InvalidArgumentError(SdaError, ValueError):
    code = Status.ERR_INVALID_ARGUMENT


class NullPointerError(SdaError, ValueError):
    code = Status.ERR_NULL_POINTER


class InvalidUtf8Error(SdaError, ValueError):
    code = Status.ERR_INVALID_UTF8


class BufferTooSmallError(SdaError):
    code = Status.ERR_BUFFER_TOO_SMALL


class UnknownKeyError(SdaError, KeyError):
    code = Status.ERR_UNKNOWN_KEY

    # KeyError quotes its argument in str(); the library's message reads better as it is.
    __str__ = Exception.__str__


class InvalidValueError(SdaError, ValueError):
    code = Status.ERR_INVALID_VALUE


class ParseError(SdaError, ValueError):
    code = Status.ERR_PARSE


class IOFailureError(SdaError, OSError):
    code = Status.ERR_IO

    # OSError's constructor interprets two arguments as (errno, strerror); keep the plain message.
    def __init__(self, message: str, code: int | None = None, report: object = None):
        SdaError.__init__(self, message, code, report)

    __str__ = Exception.__str__


class DeviceUnavailableError(SdaError):
    code = Status.ERR_DEVICE_UNAVAILABLE


class BackendUnavailableError(SdaError):
    code = Status.ERR_BACKEND_UNAVAILABLE


class OutOfMemoryError(SdaError, MemoryError):
    """A device ran out of memory. After a guarded run, ``report`` holds the figures and
    ``report.suggested_batch`` a batch predicted to fit."""

    code = Status.ERR_OUT_OF_MEMORY


class TorchError(SdaError):
    code = Status.ERR_TORCH


class CancelledError(SdaError):
    code = Status.ERR_CANCELLED


class PanicError(SdaError):
    code = Status.ERR_PANIC


class InvalidHandleError(SdaError):
    code = Status.ERR_INVALID_HANDLE


class UnsupportedError(SdaError):
    code = Status.ERR_UNSUPPORTED


#: The exception class of each status (a test checks that every Status has one).
ERRORS: dict[Status, type[SdaError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NullPointerError,
        InvalidUtf8Error,
        BufferTooSmallError,
        UnknownKeyError,
        InvalidValueError,
        ParseError,
        IOFailureError,
        DeviceUnavailableError,
        BackendUnavailableError,
        OutOfMemoryError,
        TorchError,
        CancelledError,
        PanicError,
        InvalidHandleError,
        UnsupportedError,
    )
}


def error_from_status(code: int, message: str, report: object = None) -> SdaError:
    """The exception for a non-OK status (``SdaError`` itself for a code this binding does not know)."""
    cls = ERRORS.get(_as_status(code), SdaError)  # type: ignore[arg-type]
    return cls(message, code, report)
