"""The one error a user can cause and fix: every command shows it as one line and exits with its status."""


class TinymaeError(Exception):
    """What was wrong, with which file or value, and what to do: "error: <message>", exit status 1."""
    exit_status = 1


class Interrupted(TinymaeError):
    """Ctrl-C, with what was kept and how to continue: exit status 130 (128 + SIGINT, the shell's convention)."""
    exit_status = 130
