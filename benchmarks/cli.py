"""The benchmark scripts' command lines: a mistake is one line, "error: ...", and a non-zero exit.

tinymae's own scripts print argparse's usage before the error; the benchmarks have long option lists, so
here the error stands alone and --help has the rest.
"""
import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser that shows defaults in --help and reports a bad flag as one line."""

    def __init__(self, description):
        super().__init__(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def whole_number(text):
    """An int from the command line, or argparse's "invalid ... value" with the text."""
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
