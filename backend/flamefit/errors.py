"""User-facing errors: the CLI prints these as one line on stderr, no traceback."""


class FlameFitError(Exception):
    """A problem the user can act on (bad input, missing file, no face...)."""


class ModelFileError(FlameFitError):
    """A head-model, UV, embedding or texture-space file is missing or malformed."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        message = f"{self.path}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP, with what the run leaves behind (the CLI prints
    `message` as its one line and exits 130)."""

    def __init__(self, message: str = "interrupted; nothing was written"):
        self.message = message
        super().__init__(message)
