"""A YAML document that knows where each of its keys stands, for error messages.

Experiment files are validated against a schema (``safebench.schema.spec``); a problem found there
is reported with the file, the line and the dotted field it concerns, so
:class:`YamlDocument` keeps the line of every key and list item of the parsed document.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from safebench.errors import UserError

__all__ = ["ExperimentError", "Path_", "YamlDocument"]

Path_ = tuple[str | int, ...]
"""A location in the document: keys and list indices from the root."""


class ExperimentError(UserError):
    """A problem in an experiment file, located by file, line and field."""

    def __init__(self, source: str, line: int | None, field: str, problem: str) -> None:
        where = source if line is None else f"{source}, line {line}"
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")
        self.source, self.line, self.field, self.problem = source, line, field, problem


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class YamlDocument:
    """A safely parsed YAML document plus the line of every key and list item in it.

    Plain YAML only (``yaml.SafeLoader``; any tag is refused), duplicate keys refused, and
    every problem raised as an :class:`ExperimentError` naming the file, line and field.
    """

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ExperimentError(
                    source, 1, "", "the file is empty; an experiment needs at least "
                    "name, algorithms, environments, seeds and budget"
                )  # fmt: skip
            self._index(node, ())
            self.data: Any = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = str(exc.problem or exc.context or "invalid YAML")
            if isinstance(exc, yaml.constructor.ConstructorError):
                tag = re.search(r"tag '([^']+)'", problem)
                name = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "this tag"
                raise ExperimentError(
                    source, line, "", f"the YAML tag {name!r} is not allowed: experiments are "
                    "plain YAML (mappings, lists, strings, numbers); remove the tag"
                ) from None  # fmt: skip
            raise ExperimentError(
                source, line, "", f"YAML syntax error: {problem}; check the indentation, "
                "colons and quotes on this line or the one before"
            ) from None  # fmt: skip
        finally:
            loader.dispose()

    def _index(self, node: yaml.Node, path: Path_) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in first:
                    raise ExperimentError(
                        self.source, line, _dotted((*path, name)),
                        f"duplicate key (first given on line {first[name]}); keep only one",
                    )  # fmt: skip
                first[name] = line
                key_path = (*path, name)
                self.lines[key_path] = line
                self._index(value, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*path, i))

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its closest parent present in the file."""
        parts = list(path)
        while True:
            key = tuple(str(p) if not isinstance(p, int) else p for p in parts)
            if key in self.lines:
                return self.lines[key]
            if not parts:
                return None
            parts.pop()

    def error(self, path: Path_, problem: str) -> ExperimentError:
        return ExperimentError(self.source, self.line(path), _dotted(path), problem)
