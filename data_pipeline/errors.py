"""The one error type a user sees for bad input: it names the file and, where known, the line."""


class InputError(Exception):
    """Bad user input; the message is complete and printed without a traceback."""

    def __init__(self, path, message, line=None):
        location = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{location}: {message}")
        self.path = path
        self.message = message
        self.line = line

    def __reduce__(self):
        # Rebuilt from its parts when a preprocessing worker raises it (see `worker_pool`).
        return InputError, (self.path, self.message, self.line)
