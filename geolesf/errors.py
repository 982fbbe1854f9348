"""The geolesf error hierarchy.

Every error a user can cause (a bad file, a bad option, a checksum mismatch) is a
:class:`GeolesfError`. The CLI prints ``error: <message>`` on one line and exits with
code 2; tracebacks are shown only with ``--debug``. Messages name the file or option,
what was expected and what was found.
"""

from __future__ import annotations


class GeolesfError(Exception):
    """Base class of all user-facing geolesf errors."""

    exit_code = 2


class ConfigError(GeolesfError):
    """A configuration file or command-line option is invalid."""


class DataError(GeolesfError):
    """Input data is missing, unreadable or inconsistent (shape, bands, NaN, keys)."""


class ChecksumError(GeolesfError):
    """A file's sha256 differs from the one recorded for it."""


class ModelError(GeolesfError):
    """An unknown model name, bad model arguments or an unusable checkpoint."""


class FetchError(GeolesfError):
    """A download failed or cannot run (offline mode, no URL, HTTP error)."""


class TrainingError(GeolesfError):
    """Training cannot continue (for example a NaN loss)."""
