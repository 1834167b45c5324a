"""Exceptions raised by anymask.

Every error that a user can cause (a bad image, a bad prompt, a bad checkpoint, an unwritable output)
is an :class:`AnymaskError`; the CLI prints its message on one line and exits with a non-zero code.
"""

from __future__ import annotations


class AnymaskError(Exception):
    """Base class of every error anymask raises on purpose."""

    #: exit code the CLI uses for this kind of error
    exit_code = 1


class ImageError(AnymaskError, ValueError):
    """An image could not be read or has a layout/mode anymask does not accept."""

    exit_code = 3


class PromptError(AnymaskError, ValueError):
    """Points, labels, boxes or a mask input are malformed or out of range."""

    exit_code = 4


class ModelError(AnymaskError, ValueError):
    """Unknown model name, or a checkpoint whose keys or shapes do not fit the model."""

    exit_code = 5


class WeightsError(AnymaskError):
    """A checkpoint could not be obtained or failed verification (size, sha256, unsafe pickle)."""

    exit_code = 6


class OutputError(AnymaskError, OSError):
    """An output file or directory could not be written."""

    exit_code = 7
