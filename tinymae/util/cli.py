"""The command lines, built from the settings of config.py, and the one rule for how every command ends.

    parser(prog, description, *configs)   one flag per setting: its help, its default, required ones marked
    HelpFormatter                         the same help for the scripts' own flags
    run(function, *args)                  0 when it worked; "error: <one line>" and exit status 1 for a
                                          TinymaeError or a file error; 130 for Ctrl-C (Interrupted says how to
                                          continue); 2 for a flag argparse refuses
Flags parse to argparse.SUPPRESS unless typed, so the dataclasses stay the one place defaults live, and a
resumed run can tell a typed value from a default.
"""
import argparse
import sys
from dataclasses import fields

from ..config import flag_name
from ..errors import Interrupted, TinymaeError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """For the scripts' own parsers: the description as written (its commands keep their lines), and a flag's
    default where it says something (not None, False or empty, and not where the help already names it)."""

    def _get_help_string(self, action):
        empty = action.default in (None, "", argparse.SUPPRESS) or action.default is False  # 0 is a default
        useful = not empty and "default" not in action.help
        return action.help + (" (default: %(default)s)" if useful else "")


def _widths(text):
    """'512,512,256' -> (512, 512, 256); '' -> () (no hidden layer)."""
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, such as 512,256, got {text!r}")


def _shown(value):
    return ",".join(map(str, value)) or "none" if isinstance(value, tuple) else value


def parser(prog, description, *config_classes):
    """An ArgumentParser with one flag per field of the classes (a field several of them share gets one flag,
    its default shown per class where they differ)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    by_name = {}
    for cls in config_classes:
        for f in fields(cls):
            if f.metadata.get("flag"):
                by_name.setdefault(f.name, {})[cls] = f
    for name, per_class in by_name.items():
        f = next(iter(per_class.values()))
        meta, defaults = f.metadata, {cls.__name__[:-6].lower(): g.default for cls, g in per_class.items()}
        if meta["required"]:
            note = "required"
        elif len(set(map(repr, defaults.values()))) > 1:  # e.g. --embed-dim: mlp 64, vit 128
            note = "default: " + ", ".join(f"{cls} {_shown(d)}" for cls, d in defaults.items())
        else:
            note = f"default: {_shown(f.default)}" if "(default:" not in meta["help"] else ""
        text = meta["help"] + (f" ({note})" if note else "")
        kwargs = dict(default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        if meta["positional"]:
            p.add_argument(name, nargs="+", metavar=name.upper().rstrip("S"), **kwargs)
        elif f.type is bool:
            p.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.type is tuple:
            p.add_argument(flag_name(name), dest=name, type=_widths, metavar="W,W,...", **kwargs)
        else:
            p.add_argument(flag_name(name), dest=name, type=f.type, choices=meta["choices"], required=meta["required"],
                           **kwargs)
    return p


def typed(p, argv=None):
    """The flags the user typed, {name: value} (positional lists as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(p.parse_args(argv)).items()}


def run(function, *args):
    """Call a command's body -> its exit status, every error a user can cause as one line."""
    try:
        return function(*args) or 0
    except TinymaeError as e:
        print(f"{'' if isinstance(e, Interrupted) else 'error: '}{e}", file=sys.stderr)
        return e.exit_status
    except OSError as e:  # a full disk, a folder that became read-only, a permission
        print(f"error: {e.strerror or e} ({e.filename or 'a file'}); free some space or fix the permissions, then "
              "run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
