"""Provisioner settings, each declared once: its trait, environment variables, default and bounds.

A provisioner's setting is a traitlets trait (so it can be set in a kernel spec's ``metadata.kernel_provisioner.config``
or in the server's configuration) whose default comes from the server's environment, else a built-in default::

    launch_timeout = setting(Number, "GP_LAUNCH_TIMEOUT", "KERNEL_LAUNCH_TIMEOUT", default=30.0, minimum=1,
                             maximum=3600, help="Seconds from launch until the kernel must be ready.")

Everything about the setting is in that one call: the help text users see gets the variables and the default
appended, values from every source pass the same checks (a bad one fails in one line naming the variable or the
trait), and docs/configuration.md's tables are generated from these declarations (``python -m
gateway_provisioners.provisioners.settings``; a test checks the file is current).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, HasTraits, Int, List, TraitError, TraitType, Unicode, Union
from traitlets import Set as SetTrait

from ..core.errors import ConfigurationError
from ..core.launch import Param, parse_bool, parse_user_list, split_list
from ..core.port_range import PortRange

Check = Callable[[Any, str, Any], Any]  # (value, name to report, provisioner) -> value, or ConfigurationError


@dataclass(frozen=True)
class Rule:
    """Where a setting's default comes from and what every value of it must satisfy."""

    env: tuple[str, ...]  # variables read in order; the first one set wins
    default: Any  # the built-in default, or a callable given the provisioner
    default_doc: str  # the default as the docs show it
    parse: Callable[[str, str], Any]  # (text from the environment, its variable) -> value
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Check | None = None  # a further rule, for configured and environment values alike
    limits_doc: str = ""  # the further rule in words, for the docs
    empty_is_set: bool = False  # a set-but-empty variable is a value ("deny nobody"), not "unset"

    def value_for(self, provisioner: Any, trait: str) -> Any:
        """The value when nothing configured the trait: the environment's, else the built-in default."""
        for name in self.env:
            raw = os.environ.get(name)
            if raw is None or (not raw.strip() and not self.empty_is_set):
                continue
            try:
                value = self.parse(raw, name)
            except (ConfigurationError, ValueError) as exc:
                raise trait_error(exc, name) from None
            return self.checked(value, name, provisioner)
        default = self.default(provisioner) if callable(self.default) else copy.deepcopy(self.default)
        return self.checked(default, trait, provisioner)

    def checked(self, value: Any, name: str, provisioner: Any) -> Any:
        """``value`` if it keeps the bounds, choices and further rule; else a one-line error naming ``name``."""
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = int if isinstance(value, int) else float
                Param(name, kind, self.minimum, self.maximum).parse(str(value) if kind is int else f"{value:.15g}")
            if self.choices and value not in self.choices:
                raise ConfigurationError(f"{name}={value!r} is not one of {', '.join(self.choices)}")
            return self.check(value, name, provisioner) if self.check else value
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise trait_error(exc, name) from None


def trait_error(exc: Exception, name: str) -> TraitError:
    """The one-line error traitlets reports, naming the setting or variable when ``exc`` does not already."""
    text = str(exc)
    return TraitError(text if name in text else f"{name}: {text}")


class _Declared(TraitType):  # type: ignore[type-arg]
    """Mixin of the trait types below: default from the :class:`Rule`, every value checked by it."""

    def default(self, obj: Any = None) -> Any:
        return self.metadata["rule"].value_for(obj, self.name)

    def validate(self, obj: Any, value: Any) -> Any:
        base = getattr(super(), "validate", None)  # the trait type's own check, where it has one
        return self.metadata["rule"].checked(base(obj, value) if base else value, self.name, obj)


class Text(_Declared, Unicode):  # type: ignore[misc]
    """A string."""


class Flag(_Declared, Bool):  # type: ignore[misc]
    """true or false."""


class Integer(_Declared, Int):  # type: ignore[misc]
    """A whole number."""


class Number(_Declared, Float):  # type: ignore[misc]
    """A number."""


class Mapping(_Declared, Dict):  # type: ignore[misc]
    """A JSON object."""


class Sequence(_Declared, List):  # type: ignore[misc]
    """A JSON list."""


class Anything(_Declared, AnyTrait):
    """Any Python value (server configuration only)."""


class NameSet(_Declared, Union):  # type: ignore[misc]
    """A set of names, or one comma-separated string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([SetTrait(Unicode()), Unicode()], **kwargs)


class NameList(_Declared, Union):  # type: ignore[misc]
    """A list of strings (order kept), or one comma-separated string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([List(Unicode()), Unicode()], **kwargs)


class Ports(_Declared, TraitType):  # type: ignore[type-arg]
    """A port range, ``"lower..upper"``; the value is a :class:`PortRange`."""

    def validate(self, obj: Any, value: Any) -> Any:
        if not isinstance(value, PortRange):
            try:
                value = PortRange.parse(value)
            except ConfigurationError as exc:
                raise trait_error(exc, str(self.name)) from None
        return self.metadata["rule"].checked(value, self.name, obj)


KIND_DOC: dict[type, str] = {
    Text: "string",
    Flag: "boolean",
    Integer: "integer",
    Number: "number",
    Mapping: "object",
    Sequence: "list",
    Anything: "Python object",
    NameSet: "list or comma string",
    NameList: "list or comma string",
    Ports: '`"lower..upper"`',
}


def _parse_text(raw: str, name: str) -> str:
    return raw


def _parse_bool(raw: str, name: str) -> bool:
    return parse_bool(raw, name)


def _parse_number(kind: type) -> Callable[[str, str], Any]:
    def parse(raw: str, name: str) -> Any:
        return Param(name, kind).parse(raw.strip())

    return parse


def parse_json(kind: type) -> Callable[[str, str], Any]:
    """An environment value holding a JSON ``kind`` (list or dict)."""

    def parse(raw: str, name: str) -> Any:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} is not valid JSON ({exc})") from None
        if not isinstance(value, kind):
            raise ConfigurationError(
                f"{name} must be a JSON {'list' if kind is list else 'object'}, got {type(value).__name__}"
            )
        return value

    return parse


def parse_command(raw: str, name: str) -> list[str]:
    """A command line, shell-quoted."""
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not a shell-quoted command ({exc})") from None


def _parse_port_range(raw: str, name: str) -> PortRange:
    try:
        return PortRange.parse(raw)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


_PARSERS: dict[type, Callable[[str, str], Any]] = {
    Text: _parse_text,
    Flag: _parse_bool,
    Integer: _parse_number(int),
    Number: _parse_number(float),
    Mapping: parse_json(dict),
    Sequence: parse_json(list),
    NameSet: lambda raw, name: parse_user_list(raw),
    NameList: lambda raw, name: split_list(raw),
    Ports: _parse_port_range,
}


def setting(
    kind: type[_Declared],
    *env: str,
    default: Any,
    help: str,
    default_doc: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    parse: Callable[[str, str], Any] | None = None,
    check: Check | None = None,
    limits_doc: str = "",
    empty_is_set: bool = False,
    **trait_kwargs: Any,
) -> Any:
    """A configurable trait of type ``kind`` read from ``env`` (in order) when not configured, else ``default``.

    ``default`` may be a callable given the provisioner, for defaults that depend on other settings (say so in
    ``default_doc``). ``parse`` turns an environment string into a value (by default: by ``kind``); ``minimum``,
    ``maximum``, ``choices`` and ``check`` apply to values from every source.
    """
    if parse is None and kind not in _PARSERS and env:
        raise TypeError(f"{kind.__name__} settings read from the environment need a parse function")
    shown = default_doc if default_doc is not None else _show(default)
    rule = Rule(
        env=env,
        default=default,
        default_doc=shown,
        parse=parse or _PARSERS.get(kind, _parse_text),
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        check=check,
        limits_doc=limits_doc,
        empty_is_set=empty_is_set,
    )
    where = f"{' or '.join(env)}; default {shown}" if env else f"default {shown}"
    meaning = " ".join(help.split())
    return kind(help=f"{meaning} ({where})", **trait_kwargs).tag(config=True, rule=rule, meaning=meaning)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'`"{value}"`' if value else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (set, frozenset)):
        return f"`{json.dumps(sorted(value))}`" if value else "empty"
    if isinstance(value, PortRange):
        return f'`"{value}"`'
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{json.dumps(value)}`" if value != [] and value != {} else "empty"


# --- the reference tables of docs/configuration.md --------------------------------------------------------------


def declared(cls: type[HasTraits], own_only: bool = True) -> dict[str, Any]:
    """The declared settings of ``cls`` by name (only those it declares itself, unless ``own_only`` is false)."""
    traits = cls.class_traits(config=True)
    return {
        name: trait
        for name, trait in sorted(traits.items())
        if "rule" in trait.metadata and (not own_only or name in vars(cls))
    }


def limits(rule: Rule) -> str:
    parts = []
    if rule.minimum is not None or rule.maximum is not None:
        low = "" if rule.minimum is None else f"{rule.minimum:g}"
        high = "" if rule.maximum is None else f"{rule.maximum:g}"
        parts.append(f"{low}..{high}" if low and high else (f"≥ {low}" if low else f"≤ {high}"))
    if rule.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in rule.choices))
    if rule.limits_doc:
        parts.append(rule.limits_doc)
    return "; ".join(parts) or "—"


def table(cls: type[HasTraits], own_only: bool = True) -> str:
    """A Markdown table of ``cls``'s settings: name, type, default, environment variables, limits, meaning."""
    rows = [
        "| setting | type | default | environment | limits | what it does |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, trait in declared(cls, own_only).items():
        rule: Rule = trait.metadata["rule"]
        meaning = trait.metadata["meaning"].replace("|", "\\|")
        env = ", ".join(f"`{e}`" for e in rule.env) or "—"
        kind = KIND_DOC.get(type(trait), type(trait).__name__)
        rows.append(f"| `{name}` | {kind} | {rule.default_doc} | {env} | {limits(rule)} | {meaning} |")
    return "\n".join(rows)
