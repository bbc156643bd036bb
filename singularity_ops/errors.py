"""Errors a user can act on: each message names the problem and the fix, and the CLI prints it as one line."""


class SingularityError(Exception):
    """Base for errors that end a command with a one-line message and a non-zero exit code."""

    exit_code = 2


class ConfigError(SingularityError):
    pass


class DatabaseError(SingularityError):
    pass


class MigrationError(SingularityError):
    pass


class OllamaError(SingularityError):
    """Ollama could not be reached or answered something that is not its API."""
