"""User-facing errors: one line that names the file or config key and says what to do.

Entry points catch :class:`LofiError` and print its message without a traceback.
"""


class LofiError(Exception):
    """An error the user can act on; its message is shown as-is, on one line."""


class DataError(LofiError):
    """Bad or missing audio data, cache or manifest."""


class ConfigError(LofiError):
    """A config value that cannot work (the message names the key)."""


class CheckpointError(LofiError):
    """A missing, corrupt or unsafe checkpoint."""
