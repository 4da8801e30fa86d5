"""The one exception hierarchy of ``converters``.

Every failure while reading an EPU file surfaces as a :class:`ConverterError` subclass; lxml, ``OSError`` and
value errors are translated at the boundary so that callers can decide what to do by type alone:

* :class:`IncompleteFileError` - the file is a well-formed prefix that ended early (EPU writes incrementally):
  retry later.
* :class:`MalformedFileError` - the file is complete but not what we expect: report it, do not retry.
* :class:`UnsafeFileError` - refused before parsing (DOCTYPE / entity declarations, over the size cap).
* :class:`UnknownFileError` - the path is not an EPU file kind that the package parses.
"""

from __future__ import annotations

from pathlib import Path


class ConverterError(Exception):
    """Base class of every error raised by ``converters``.

    Attributes:
        path: the file concerned (``None`` when the error is not tied to a file).
        detail: a human-readable explanation without the path.
    """

    def __init__(self, path: str | Path | None, detail: str) -> None:
        self.path = str(path) if path is not None else None
        self.detail = detail
        super().__init__(f"{self.path}: {detail}" if self.path else detail)


class IncompleteFileError(ConverterError):
    """The file ended early (still being written, or empty): retryable once the file has settled again."""


class MalformedFileError(ConverterError):
    """The file is complete but malformed or unexpected.

    Attributes:
        element: the element path (local names joined by ``/``) where the problem was found, or ``None`` when
        the
            problem is with the document as a whole.
    """

    def __init__(self, path: str | Path | None, detail: str, *, element: str | None = None) -> None:
        self.element = element
        super().__init__(path, f"{detail} (at {element})" if element else detail)


class UnsafeFileError(ConverterError):
    """The file was refused without being parsed: it declares a DOCTYPE/entities or exceeds the size cap."""


class UnknownFileError(ConverterError):
    """The path does not name an EPU file kind that ``converters`` can parse."""


__all__ = [
    "ConverterError",
    "IncompleteFileError",
    "MalformedFileError",
    "UnknownFileError",
    "UnsafeFileError",
]
