"""Typed configs from YAML: dataclasses checked on load, with errors that name the key.

A config is a tree of dataclasses. :func:`from_dict` builds one from plain data and refuses
unknown keys, wrong types, non-finite numbers and missing required values; :func:`apply_overrides`
applies ``--set key.sub=value`` strings (values parsed as YAML); :func:`to_dict` gives back plain
data to save beside a run.

Config files are untrusted input: :func:`medsynth.io.files.read_text_file` reads only regular files of bounded size
(never a device or a FIFO), and :func:`parse_yaml` bounds nesting and alias expansion (a
"billion laughs" file is refused) and reports syntax errors by line and column without echoing
the file's content.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from medsynth.errors import MedsynthError, describe, short, shown
from medsynth.io.files import read_text_file

T = TypeVar("T")

#: Largest config file read (YAML or JSON), in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Most YAML nodes in one document with every alias expanded (a shipped config has ~100).
MAX_YAML_NODES = 10_000
#: Deepest nesting of YAML collections.
MAX_YAML_DEPTH = 64
#: Longest ``extends:`` chain.
MAX_EXTENDS = 16
#: Integers must fit in 64 bits (what torch and numpy take).
MAX_INT = 2**63 - 1
CONFIG_SUFFIXES = (".yaml", ".yml")

class ConfigError(MedsynthError):
    """A :class:`MedsynthError` about one dotted config ``key``: ``"<key>: <problem>"``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


_KEY = re.compile(r"[A-Za-z_][\w.\[\]]*")


def split_key(message: str, prefix: str) -> tuple[str, str]:
    """``(dotted key, problem)`` of a ``"key: problem"`` message (a key relative to ``prefix``)."""
    head, sep, rest = message.partition(": ")
    if sep and _KEY.fullmatch(head):
        return (f"{prefix}.{head}" if prefix else head), rest
    return prefix, message


def check_range(obj: Any, key: str, low: float | None = None, high: float | None = None, *,
                above: bool = False, below: bool = False) -> None:
    """Refuse ``obj.<key>`` (a number, or each entry of a sequence) outside ``[low, high]``.

    ``above``/``below`` make the bound strict: ``(low, ...`` and ``..., high)``.

    Raises:
        ValueError: ``"<key>: must be at least <low>, got <value>"`` and the like.
    """
    value = getattr(obj, key)
    entries = value if isinstance(value, Sequence) else [value]
    every = "every entry " if isinstance(value, Sequence) else ""
    for entry in entries:
        if low is not None and (entry <= low if above else entry < low):
            need = ("positive" if low == 0 else f"greater than {low}") if above else \
                ("non-negative" if low == 0 else f"at least {low}")
        elif high is not None and (entry >= high if below else entry > high):
            need = f"less than {high}" if below else f"at most {high}"
        else:
            continue
        raise ValueError(f"{key}: {every}must be {need}, got {short(list(value) if every else value)}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:  # list[int], not list
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except MedsynthError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(key, f"{short(value)} fits none of {' | '.join(_type_name(o) for o in options)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if not any(type(value) is type(option) and value == option for option in allowed):
            raise ConfigError(key, f"{short(value)} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {short(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(key, f"expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        converted = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {short(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(key, f"must be a finite number, got {short(value)}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {short(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(key, f"{short(value)} does not fit in 64 bits")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {short(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {short(value)}")
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and type.

    Raises:
        ConfigError: unknown or missing key, a value of the wrong type or a non-finite number
            (the message names the dotted key), or a ``validate()`` failure of the dataclass.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {short(data)}")
    where = f"{prefix}." if prefix else ""
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(prefix or "config", f"keys must be names, got {short(name)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}{shown(unknown[0], 80)}", f"unknown key (known: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = f"{where}{name}"
        if name in data:
            values[name] = _convert(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required key is missing")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as err:
            raise ConfigError(*split_key(str(err), prefix)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML-ready data from a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _override_key(override: str) -> tuple[str, str]:
    """``(dotted key, raw value)`` of a ``key.sub=value`` override, refusing malformed ones."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not all(part.strip() for part in key.split(".")):
        raise MedsynthError(f"--set {short(override)}: expected key=value, e.g. train.steps=100")
    return key, raw


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides to plain config data (values parsed as YAML)."""
    for override in overrides:
        key, raw = _override_key(override)
        try:
            value = _load_yaml_text(raw)
        except _Refused as err:
            raise MedsynthError(f"--set {shown(key, 80)}: {err}") from None
        except (yaml.YAMLError, ValueError, TypeError, RecursionError):
            value = raw  # not YAML: the text itself
        node = data
        parts = [part.strip() for part in key.split(".")]
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MedsynthError(f"--set {shown(key, 80)}: {shown(part, 80)} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def blame_override(err: ConfigError, overrides: Sequence[str]) -> str | None:
    """``err``'s message told against the last ``--set`` that wrote its key (or a section above or
    below it), e.g. ``--set train.step=5: unknown key (...)``; None when no override did."""
    for override in reversed(overrides):
        key = _override_key(override)[0]
        given = shown(override, 120)
        if err.key == key:
            return f"--set {given}: {err.problem}"
        # inside the section the override wrote, or a typo in a section name it made up
        if err.key.startswith((f"{key}.", f"{key}[")) or (key.startswith(f"{err.key}.")
                                                           and err.problem.startswith("unknown key")):
            return f"--set {given}: {err}"
    return None


# reading config files ----------------------------------------------------------------------------
# parsing YAML ------------------------------------------------------------------------------------
class _Refused(Exception):
    """A YAML document too deep or too large once its aliases are expanded."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that reads ``5e-4`` as a number (YAML 1.2) and bounds the nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 wants a dot and a signed exponent (1.0e-4); 5e-4, 1e23 and -3E+2 are numbers too
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it beyond ``MAX_YAML_NODES`` nodes or
    ``MAX_YAML_DEPTH`` levels (a "billion laughs" file), or that refers to itself."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    active: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key not in done:
            if key in active:
                raise _Refused("a YAML alias refers to the collection that contains it")
            active.add(key)
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            size, height = 1, 0
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > MAX_YAML_NODES:
                    raise _Refused(f"YAML of more than {MAX_YAML_NODES:,} values once its aliases are expanded")
            active.discard(key)
            done[key] = size, height
        size, height = done[key]
        if depth + height > MAX_YAML_DEPTH:
            raise _Refused(f"YAML nested more than {MAX_YAML_DEPTH} levels deep once its aliases are expanded")
        return size, height

    visit(root, 0)


def _load_yaml_text(text: str) -> Any:
    """Parse one YAML document with :class:`_Loader`, checking its expanded size before building it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what, never the offending line itself (the file may not be YAML at all)."""
    if isinstance(err, yaml.reader.ReaderError):
        character = f"#x{err.character:04x}" if isinstance(err.character, int) else "a byte"
        return f"invalid YAML at character {err.position} (character {character} is not allowed)"
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}" + (f" ({shown(problem, 80)})" if problem else "")


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document (safe types; ``5e-4`` is a number); errors start with ``source``.

    Raises:
        MedsynthError: a syntax error (line and column, not the content), a value YAML cannot
            build, or a document nested too deep or too large once its aliases are expanded.
    """
    try:
        return _load_yaml_text(text)
    except _Refused as err:
        raise MedsynthError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise MedsynthError(f"{source}: {_yaml_problem(err)}") from None
    except RecursionError:
        raise MedsynthError(f"{source}: YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a date 2024-02-30
        raise MedsynthError(f"{source}: invalid YAML value ({shown(describe(err), 80)})") from None


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; errors name the file.

    A file may start from another one with ``extends: other.yaml`` (relative to this file): the
    other file is loaded first and this file's keys are merged into it, section by section.
    """
    return _load_yaml(Path(path), shown(path), ())


def _load_yaml(path: Path, label: str, seen: tuple[tuple, ...]) -> dict:
    text = read_text_file(path, label=label, suffixes=CONFIG_SUFFIXES, max_bytes=MAX_CONFIG_BYTES, kind="config")
    info = os.stat(path)
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        raise MedsynthError(f"{label} forms a cycle")
    name = shown(path)
    data = parse_yaml(text, name)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MedsynthError(f"{name}: a config must be a mapping of keys to values")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise MedsynthError(f"{name}: extends: expected a file name, got {short(base)}")
    if len(seen) >= MAX_EXTENDS:
        raise MedsynthError(f"{name}: extends: more than {MAX_EXTENDS} files deep")
    base_label = f"{name}: extends: {shown(base)}"
    if "\0" in base:  # before any path arithmetic, which raises ValueError on it
        raise MedsynthError(f"{base_label}: a path cannot contain a NUL byte")
    return _merge(_load_yaml(path.parent / base, base_label, (*seen, identity)), data)


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
