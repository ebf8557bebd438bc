"""The benchmark scripts' command lines: a mistake is one line, "error: ...", and a non-zero exit.

tinymae's own scripts print argparse's usage before the error; the benchmarks have long option lists, so
here the error stands alone and --help has the rest.
"""
import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its example commands keep their lines); "(default: X)" after a flag's
    help where X says something (not for a switch, nor for a default the help explains itself)."""

    def _get_help_string(self, action):  # the hook argparse.ArgumentDefaultsHelpFormatter uses
        if action.default in (None, False, argparse.SUPPRESS) or "default" in action.help:
            return action.help
        return action.help + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser that reports a bad flag as one line. doc: the script's docstring, whose first
    two paragraphs (what it does, how to run it) open --help."""

    def __init__(self, doc):
        description = "\n\n".join(doc.split("\n\n")[:2])
        super().__init__(description=description, formatter_class=HelpFormatter,
                         epilog="The script's docstring and benchmarks/README.md explain what it prints.")

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def whole_number(text):
    """An int from the command line, or a message that names the text."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive(text):
    """argparse type: a whole number of at least 1 (batch sizes, repeats, steps)."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text):
    """argparse type: a whole number of at least 0 (warm-up steps, steps not counted)."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
