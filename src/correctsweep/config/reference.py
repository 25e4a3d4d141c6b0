"""docs/spec-reference.md, generated from the schema's and the plug-ins' field docstrings, so the reference
cannot drift from the code (tests/test_docs.py compares the two). Regenerate it with

    python -m correctsweep.config.reference > docs/spec-reference.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing

from correctsweep.config.schema import Spec, plugin_field


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right below it in the class body), joined into one line."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for here, after in zip(body, body[1:]):
        if (isinstance(here, ast.AnnAssign) and isinstance(here.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[here.target.id] = " ".join(after.value.value.split())
    return docs


def _type(hint) -> str:
    if typing.get_args(hint):  # list[str], dict[str, Any], str | None
        return str(hint).replace("typing.", "").replace("NoneType", "None")
    return getattr(hint, "__name__", str(hint))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _rows(cls: type, prefix: str) -> list[str]:
    """One table row per field of `cls` (not nested sections), keyed by its dotted path."""
    hints, docs, plugins = typing.get_type_hints(cls), field_docs(cls), plugin_field(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]) or (plugins and f.name == plugins[0]):
            continue
        cell = lambda text: text.replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {cell(_type(hints[f.name]))} | `{cell(_default(f))}` | "
                    f"{cell(docs.get(f.name, ''))} |")
    return rows


def _table(cls: type, prefix: str) -> list[str]:
    return ["| key | type | default | meaning |", "| --- | --- | --- | --- |", *_rows(cls, prefix)]


def markdown() -> str:
    """The whole reference: the top-level keys, then each section, each plug-in's settings under it."""
    out = ["# Spec reference", "",
           "Every key of a sweep spec, generated from the code's docstrings",
           "(`python -m correctsweep.config.reference`; a test fails when this page is stale). A spec names only",
           "what it changes; `--set key=value` overrides any key. A plug-in's own settings go under its name in its",
           "section, e.g. `corrector.xgboost.max_rounds`.",
           "", "## Top-level keys", "", *_table(Spec, ""), ""]
    hints, docs = typing.get_type_hints(Spec), field_docs(Spec)
    for f in dataclasses.fields(Spec):
        section = hints[f.name]
        if not dataclasses.is_dataclass(section):
            continue
        out += [f"## `{f.name}`", "", docs.get(f.name, ""), "", *_table(section, f"{f.name}."), ""]
        plugins = plugin_field(section)
        if plugins:
            for name, plugin in plugins[1].builtin().items():
                if dataclasses.fields(plugin.Settings):
                    out += [f"### `{f.name}.{name}`", "", f"The {plugins[1].what} {name}'s own settings.", "",
                            *_table(plugin.Settings, f"{f.name}.{name}."), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
