"""The user-facing error type (kept free of heavy imports so that the CLI starts fast)."""


class AccelError(Exception):
    """A known, user-facing error: the CLI prints its message as one line and exits non-zero."""
