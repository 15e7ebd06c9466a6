"""Rendering a tool's command template so that no parameter value can become shell code.

Templates are Jinja2 (sandboxed). Every ``{{ … }}`` output passes through one finalize
hook that never returns the value itself: it records the value and leaves a placeholder.
After rendering, either

- the command is a *simple command* — one line of plain words, placeholders and ``<``,
  ``>`` or ``>>`` redirections, no quotes, ``$``, globs, pipes or ``;`` in the template's
  own text — and it runs **without a shell**, as an argv list with each value one
  argument (the fast path; ``cat {{ input1 }} > {{ out_file1 }}`` is one), or
- it needs a shell (pipes, ``&&``, several lines …) and every value is put back through
  ``shlex.quote``, so a value is always exactly one word to the shell.

Either way a value containing ``$(…)``, backticks, ``;`` or quotes reaches the program as
those characters and runs nothing. The rendered script is what the job records and writes
into its working directory.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, Undefined, pass_context
from jinja2.sandbox import SandboxedEnvironment

PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
# A word of the template's own text that means the same to sh as to execve.
_PLAIN_WORD = re.compile(r"^(?:[\w@%+=:,./-]|\x00\d+\x00)+$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_REDIRECTS = {"<", ">", ">>"}
# Words a shell treats differently from a program of the same name.
_SHELL_ONLY = frozenset(
    "if then else elif fi for while until do done case esac in function select time "
    "cd export set unset exec eval source . alias ulimit umask read trap wait shift return "
    "exit break continue local declare typeset readonly let command builtin hash type".split()
)


class CommandError(ValueError):
    """A command template could not be rendered."""


@dataclass(frozen=True)
class RenderedCommand:
    """A rendered command: always a quoted shell script, and an argv plan when no shell is needed."""

    script: str
    argv: list[str] | None = None
    stdin: str | None = None
    stdout: str | None = None
    append: bool = False


class DatasetValue:
    """A dataset in a template: renders as its path; ``.ext``, ``.name``, ``.hid`` … for the rest."""

    def __init__(self, path: str, *, ext: str = "data", name: str = "", hid: int | None = None,
                 element_identifier: str | None = None, metadata: dict[str, Any] | None = None):
        self.path = self.file_name = path
        self.ext = self.extension = ext
        self.name = name
        self.hid = hid
        self.element_identifier = element_identifier or name
        self.metadata = metadata or {}

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"DatasetValue({self.path!r})"


class CollectionValue:
    """A collection in a template: iterates over its elements; ``.forward``/``['name']`` by identifier."""

    def __init__(self, collection_type: str, elements: list[tuple[str, Any]]):
        self.collection_type = collection_type
        self._elements = elements

    def __iter__(self) -> Iterator[Any]:
        return iter(value for _, value in self._elements)

    def __len__(self) -> int:
        return len(self._elements)

    def keys(self) -> list[str]:
        """Element identifiers in order."""
        return [name for name, _ in self._elements]

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self._elements[key][1]
        for name, value in self._elements:
            if name == key:
                return value
        raise KeyError(key)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def leaves(self) -> Iterator[Any]:
        """Every dataset, depth first."""
        for value in self:
            if isinstance(value, CollectionValue):
                yield from value.leaves()
            else:
                yield value


class BooleanValue:
    """A boolean parameter: true or false in ``{% if %}``, its truevalue/falsevalue when printed."""

    def __init__(self, value: bool, truevalue: str = "true", falsevalue: str = "false"):
        self.value = value
        self.text = truevalue if value else falsevalue

    def __bool__(self) -> bool:
        return self.value

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bool):
            return self.value == other
        if isinstance(other, str):
            return self.text == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)


class ColumnList:
    """A multiple data_column: one argument "1,3" when printed (as Galaxy), iterable for loops."""

    def __init__(self, columns: list[str]):
        self.columns = list(columns)

    def __str__(self) -> str:
        return ",".join(self.columns)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, index: int) -> str:
        return self.columns[index]


class _Collector:
    """The values one rendering printed, in order."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: Any) -> str:
        if isinstance(value, CollectionValue):
            return " ".join(self.add(v) for v in value.leaves())
        if isinstance(value, (list, tuple)):
            return " ".join(self.add(v) for v in value)
        text = _text(value)
        if "\x00" in text:
            raise CommandError("a parameter value contains a NUL character")
        self.values.append(text)
        return f"\x00{len(self.values) - 1}\x00"


def _text(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pass_context
def _finalize(context: Any, value: Any) -> str:
    collector = context.get("__collector__")
    if not isinstance(collector, _Collector):
        raise CommandError("commands must be rendered through CommandTemplate")
    return collector.add(value)


@functools.lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(finalize=_finalize, autoescape=False, keep_trailing_newline=False)


@functools.lru_cache(maxsize=1)
def label_environment() -> SandboxedEnvironment:
    """The environment of output labels (dataset names: nothing is quoted)."""
    return SandboxedEnvironment(autoescape=False)


class CommandTemplate:
    """A compiled command template."""

    def __init__(self, source: str):
        try:
            self.template = _environment().from_string(source)
        except TemplateError as exc:
            where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            raise CommandError(f"template syntax error{where}: {exc.message}") from exc
        self.source = source

    def render(self, context: dict[str, Any], *, path: str | None = None) -> RenderedCommand:
        """Render with the values in ``context``; ``path`` is the PATH used to find programs."""
        collector = _Collector()
        try:
            text = self.template.render({**context, "__collector__": collector})
        except CommandError:
            raise
        except Exception as exc:  # noqa: BLE001 - any template failure is the tool's fault
            raise CommandError(f"cannot render the command: {type(exc).__name__}: {exc}") from exc
        return plan(text, collector.values, path=path)


def plan(text: str, values: list[str], *, path: str | None = None) -> RenderedCommand:
    """The quoted script for rendered text, with an argv plan when it is a simple command."""
    script = PLACEHOLDER.sub(lambda m: shlex.quote(values[int(m.group(1))]), text).strip()
    if not script:
        raise CommandError("the command is empty")
    simple = _simple_command(text.strip(), values, path)
    if simple is None:
        return RenderedCommand(script=script)
    argv, stdin, stdout, append = simple
    return RenderedCommand(script=script, argv=argv, stdin=stdin, stdout=stdout, append=append)


def _simple_command(
    text: str, values: list[str], path: str | None
) -> tuple[list[str], str | None, str | None, bool] | None:
    """(argv, stdin, stdout, append) when sh would run ``text`` as one plain command, else None."""
    if "\n" in text or "\r" in text:
        return None
    tokens = text.split()
    words: list[str] = []
    stdin = stdout = None
    append = False
    expand = lambda token: PLACEHOLDER.sub(lambda m: values[int(m.group(1))], token)  # noqa: E731
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in _REDIRECTS:
            if index + 1 >= len(tokens) or not _PLAIN_WORD.match(tokens[index + 1]):
                return None
            target = expand(tokens[index + 1])
            if token == "<":
                stdin = target
            else:
                stdout, append = target, token == ">>"
            index += 2
            continue
        if not _PLAIN_WORD.match(token):
            return None
        if not words and _ASSIGNMENT.match(token):
            return None
        words.append(expand(token))
        index += 1
    if not words or words[0] in _SHELL_ONLY or not words[0]:
        return None
    if "/" not in words[0] and _which(words[0], path) is None:
        return None
    return words, stdin, stdout, append


@functools.lru_cache(maxsize=256)
def _which(program: str, path: str | None) -> str | None:
    return shutil.which(program, path=path)

