"""The command lines of tinymae.pretrain and tinymae.finetune, built from the settings in config.py: one flag
per dataclass field, its help and default from the field, so a new setting needs no edit here."""
import argparse
from dataclasses import fields

from ..config import flag_name


def _parse_widths(text):
    """'512,512,256' -> (512, 512, 256); '' -> () (e.g. no hidden decoder layer)."""
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 512,256, got {text!r}")


def _argument(parser, name, fields_by_class):
    """One flag for setting `name`; fields_by_class: {class: its dataclass field} where the setting exists."""
    f = next(iter(fields_by_class.values()))
    meta = f.metadata
    defaults = {cls: f.default for cls, f in fields_by_class.items()}
    if len(set(map(repr, defaults.values()))) == 1:
        shown = f.default
    else:  # e.g. embed_dim: 64 for the MLP, 128 for the ViT
        shown = ", ".join(f"{cls.__name__.replace('Config', '').lower()} {d}" for cls, d in defaults.items())
    help_text = meta["help"] if "default:" in meta["help"] else f"{meta['help']} (default: {_show(shown)})"
    kwargs = dict(dest=name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))  # argparse formats help
    if f.type is bool:
        parser.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, **kwargs)
        return
    if f.type is tuple:
        kwargs.update(type=_parse_widths, metavar="W,W,...")
    else:
        kwargs.update(type=f.type, choices=meta["choices"])
    parser.add_argument(flag_name(name), **kwargs)


def _show(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return value


def add_config_arguments(parser, *config_classes, title=None):
    """Add one flag per flag-able field of the classes (a field shared by several gets one flag).

    Flags default to argparse.SUPPRESS: the parsed namespace holds only what the user typed, so the
    dataclass stays the one place where defaults live, and a resumed run can tell a typed value from a
    default."""
    group = parser.add_argument_group(title) if title else parser
    by_name = {}
    for cls in config_classes:
        for f in fields(cls):
            if f.metadata.get("flag", False):
                by_name.setdefault(f.name, {})[cls] = f
    for name, fields_by_class in by_name.items():
        _argument(group, name, fields_by_class)
    return group


def split_settings(typed, config_class):
    """The typed settings (a dict) that belong to `config_class`, and the rest."""
    names = {f.name for f in fields(config_class)}
    return ({k: v for k, v in typed.items() if k in names}, {k: v for k, v in typed.items() if k not in names})


def resumable_settings(config_class):
    """Fields of `config_class` that a resumed run takes from the command line instead of the checkpoint."""
    return {f.name for f in fields(config_class) if f.metadata.get("on_resume") == "new"}
