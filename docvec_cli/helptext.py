"""`docvec ... --help` written with click's conventions.

typer 0.29 prints every option's Python type, flags included (`--wait <bool>`, even `--help <bool>`),
and a required argument in braces (`{paths}...`), which reads like a template nobody filled in. `tidy`
gives the CLI's parameters click's conventions instead: nothing after a flag; after an option that takes
a value, click's metavar (TEXT, INTEGER, FLOAT, PATH, a choice's [a|b]); an argument as `PATHS...` when
required, `[PATHS]...` when not.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

CLICK_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "Path": "PATH",
                    "path": "PATH", "file": "FILE", "directory": "DIRECTORY", "UUID": "UUID",
                    "int range": "INTEGER RANGE", "float range": "FLOAT RANGE"}


def _click_type(display: str | None) -> str | None:
    """typer's `<type>` as click names it: `<str>` -> TEXT, `<a|b>` (a choice) -> [a|b]."""
    if not display:
        return None
    label = display.removeprefix("<").removesuffix(">")
    if "|" in label:
        return f"[{label}]"
    return CLICK_TYPE_NAMES.get(label, label.upper())


class ClickStyleOption(TyperOption):
    """A typer option whose help shows what click would: no type after a flag."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        shown = _click_type(self.display_type(ctx))
        return f"{shown}..." if shown and self.nargs != 1 else shown


class ClickStyleArgument(TyperArgument):
    """A typer argument shown as click shows one: `PATHS...`, `[QUERY]`."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name says it; typer's `<list[Path]>` only repeats it in Python's words

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.nargs == 1 else f"{self.display_name_raw}..."
        return name if self.required else f"[{name}]"


def _tidy_param(param: Any) -> None:
    # typer builds its parameters itself (no hook for a class of our own): the instances take ours, which add
    # no state, only the help rendering above.
    if type(param) is TyperOption:
        param.__class__ = ClickStyleOption
    elif type(param) is TyperArgument:
        param.__class__ = ClickStyleArgument


def tidy(command: Any) -> Any:
    """`command` (typer's click command tree) with click-style help on every parameter, `--help` included."""
    for param in command.params:
        _tidy_param(param)
    ctx = command.context_class(command, **(command.context_settings or {}))
    help_option = command.get_help_option(ctx)  # made here, then cached by the command: the one --help uses
    if help_option is not None:
        _tidy_param(help_option)
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            tidy(sub)
    return command
