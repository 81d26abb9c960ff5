"""YAML with line numbers, and a reader that turns it into checked settings.

Contract
- ``parse(text, filename)`` returns plain Python data (dicts, lists, scalars) plus a map from key path
  (a tuple like ``("listeners", 0, "port")``) to its 1-based line. Duplicate keys and YAML syntax
  errors raise ``PolicyError`` naming the file and line.
- ``Reader`` walks that data. Each policy section declares what it reads (``r.integer("port", 8080,
  minimum=1)``); a wrong type, an out-of-range value or an unknown key becomes a ``Problem`` with
  file, line, key and reason. The reader collects every problem before ``PolicyError`` is raised, so
  one run of ``check-config`` shows them all.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, overload

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class PolicyError(Exception):
    """A policy that cannot be used. ``problems`` lists every reason, each with file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Composer:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Path, int] = {}
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            self.constructor.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    raise PolicyError([Problem(self.filename, key_node.start_mark.line + 1, dotted(path),
                                               f"keys must be text, got {key!r}")])
                key = str(key)
                if key in out:
                    raise PolicyError([Problem(self.filename, key_node.start_mark.line + 1,
                                               dotted(path + (key,)), "duplicate key")])
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def parse(text: str, filename: str) -> tuple[Any, dict[Path, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = " ".join(str(x) for x in (exc.context, exc.problem) if x) or "not valid YAML"
        raise PolicyError([Problem(filename, line, "", f"not valid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(filename, None, "", f"not valid YAML: {exc}")]) from None
    if node is None:
        return None, {}
    composer = _Composer(filename)
    try:
        return composer.build(node, ()), composer.lines
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise PolicyError([Problem(filename, mark.line + 1 if mark else None, "", str(exc.problem))]) from None


_MISSING = object()


class Reader:
    """Reads one mapping of the policy; records problems instead of raising at the first one."""

    def __init__(self, data: Any, path: Path, lines: dict[Path, int], file: str,
                 problems: list[Problem]) -> None:
        self.path = path
        self.lines = lines
        self.file = file
        self.problems = problems
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem((), f"must be a mapping of settings, got {_kind(data)}")
            data = {}
        self.data: dict[str, Any] = data

    # -- problems ------------------------------------------------------------------------------
    def line(self, sub: Path = ()) -> int | None:
        path = self.path + sub
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def problem(self, sub: Path, reason: str) -> None:
        self.problems.append(Problem(self.file, self.line(sub), dotted(self.path + sub), reason))

    def finish(self) -> None:
        """Report keys nobody read (typos), with a suggestion when one is close."""
        for key in self.data:
            if key not in self.seen:
                close = difflib.get_close_matches(key, sorted(self.seen), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                known = ", ".join(sorted(self.seen))
                self.problem((key,), f"unknown setting{hint} (known here: {known})")

    # -- typed reads ---------------------------------------------------------------------------
    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.seen.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.problem((key,), "is required")
                return None
            return default
        return value

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def integer(self, key: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem((key,), f"must be a whole number, got {value!r}")
            return default
        return self._ranged(key, value, default, minimum, maximum)

    def number(self, key: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem((key,), f"must be a number, got {value!r}")
            return default
        value = float(value)
        if exclusive_minimum and minimum is not None and value <= minimum:
            self.problem((key,), f"must be greater than {minimum:g}, got {value:g}")
            return default
        return self._ranged(key, value, default, minimum, maximum)

    def _ranged(self, key, value, default, minimum, maximum):
        if minimum is not None and value < minimum:
            self.problem((key,), f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.problem((key,), f"must be at most {maximum}, got {value}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.problem((key,), f"must be true or false, got {value!r}")
            return default
        return value

    @overload
    def text(self, key: str, default: str, *, choices: tuple[str, ...] | None = None) -> str: ...

    @overload
    def text(self, key: str, default: str | None = ..., *, choices: tuple[str, ...] | None = None
             ) -> str | None: ...

    def text(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] | None = None
             ) -> str | None:
        """The text at ``key``: ``default`` when it is absent (required when no default is given: then
        None and a problem), or when it is not text (a problem)."""
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.problem((key,), f"must be text, got {_kind(value)}")
            return default if default is not _MISSING else None
        if choices and value not in choices:
            self.problem((key,), f"must be one of {', '.join(choices)}, got {value!r}")
            return default if default is not _MISSING else None
        return value

    def mapping(self, key: str) -> Reader:
        self.seen.add(key)
        return Reader(self.data.get(key), self.path + (key,), self.lines, self.file, self.problems)

    def items(self, key: str) -> list[tuple[str, Reader]]:
        """A mapping of name -> settings, e.g. ``upstreams: {nl: {...}}``."""
        self.seen.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, dict):
            self.problem((key,), f"must be a mapping of names to settings, got {_kind(value)}")
            return []
        return [(name, Reader(v, self.path + (key, name), self.lines, self.file, self.problems))
                for name, v in value.items()]

    def sequence(self, key: str) -> list[Reader] | None:
        """A list of mappings; None when the key is absent (so the caller applies its default)."""
        self.seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.problem((key,), f"must be a list, got {_kind(value)}")
            return None
        return [Reader(v, self.path + (key, i), self.lines, self.file, self.problems)
                for i, v in enumerate(value)]

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        self.seen.add(key)
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            self.problem((key,), "must be a list of text values")
            return default
        return tuple(str(v) for v in value)

    def size(self, key: str, default: int) -> int:
        """A byte size: a whole number or text like '40 MiB', '512 KB'."""
        value = self.raw(key, default)
        parsed = _parse_size(value, None)
        if parsed is None or parsed < 0:
            self.problem((key,), f"must be a size like 1048576, '512 KiB' or '40 MiB', got {value!r}")
            return default
        return parsed


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def _parse_size(value: Any, fallback: Any) -> Any:
    if isinstance(value, bool):
        return fallback
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return fallback
    text = value.strip().lower().replace("_", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ").strip()
    unit = text[len(number):].strip()
    try:
        amount = float(number)
    except ValueError:
        return fallback
    if unit not in _UNITS:
        return fallback
    return int(amount * _UNITS[unit])


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
