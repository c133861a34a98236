"""The project's error types. Each carries a one-line message that names the file or key at fault.

The CLI maps them to exit codes: usage/config errors exit 2, data errors exit 1.
"""


class MarsedgeError(Exception):
    """Base class: a failure the user can act on, reported as one line without a traceback."""

    exit_code = 1

    def __init__(self, *args: object) -> None:
        # A DataLoader re-raises a worker's error as `type(error)(text)`, the text holding the
        # worker's whole traceback; the line the user needs is the original message, its last line.
        if len(args) == 1 and isinstance(args[0], str) and "\nOriginal Traceback" in args[0]:
            last = args[0].rstrip().splitlines()[-1]
            name = f"{type(self).__module__}.{type(self).__qualname__}: "
            args = (last.removeprefix(name),)
        super().__init__(*args)


class ConfigError(MarsedgeError, ValueError):
    """A bad config file, key or value (names the key and suggests the nearest valid one)."""

    exit_code = 2


class DataError(MarsedgeError):
    """Missing, corrupt or inconsistent data on disk (names the file)."""

    exit_code = 1


class FrameError(DataError):
    """A frame that cannot be decoded: corrupt, truncated, empty or of the wrong size."""


class ModelError(MarsedgeError):
    """A checkpoint, ONNX model or engine that cannot be used as asked (names the file and why)."""

    exit_code = 1


class WriteError(MarsedgeError, OSError):
    """A file that could not be written (disk full, read-only folder, file size limit): says
    "cannot write PATH: REASON". Still an OSError (errno, strerror, filename kept) for callers that
    handle write failures themselves."""

    exit_code = 1

    def __init__(self, path: object, cause: OSError) -> None:
        OSError.__init__(self, cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"
