"""Reading a spec: strict YAML into the schema's dataclasses, --set overrides, and a run's stored spec.

Unknown keys and impossible values are rejected with one line naming the key, because a typo in a
sweep spec otherwise silently runs the default for hours.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from correctsweep.config.checks import MAX_INT, validate
from correctsweep.config.schema import Spec, plugin_field
from correctsweep.errors import SpecError, UntrustedCode
from correctsweep.plugins import Registry, user_code


def from_mapping(cls: type, raw: Any, where: str, finite: bool = True) -> Any:
    """`raw` as the dataclass `cls`, nested dataclasses and types checked; a SpecError names the first
    unknown key or wrong type by its dotted path. A section that holds plug-ins (see schema.plugin_field)
    reads any other key as a plug-in's name and its value as that plug-in's settings. `finite`: numbers
    must be finite (a spec's); a record's figures may be NaN, how an undefined ratio is stored, or infinite, the
    tau of a corrector that changes nothing (certify.NO_CORRECTION)."""
    if not isinstance(raw, dict):
        raise SpecError(f"'{where or 'spec'}' must be a mapping of keys, got {_shown(raw)}")
    hints = typing.get_type_hints(cls)
    plugins = plugin_field(cls)
    known = {f.name for f in dataclasses.fields(cls)} - {plugins[0] if plugins else None}
    values, sections = {}, {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key in known:
            values[key] = _coerce(hints[key], value, path, finite)
        elif plugins:
            plugin = _plugin(plugins[1], key, path, known)
            sections[key] = from_mapping(plugin.Settings, {} if value is None else value, path, finite)
        else:
            raise SpecError(f"unknown key '{path}'; known keys here: {', '.join(sorted(known))}")
    made = cls(**values)
    if plugins:
        getattr(made, plugins[0]).update(sections)
    return made


def _plugin(registry: Registry, key: Any, path: str, known: set[str]) -> type:
    """The plug-in whose settings section `key` is; an unknown key names where such a setting now lives."""
    try:
        return registry.get(key, path)
    except UntrustedCode:
        raise
    except SpecError:
        owners = [name for name, cls in registry.builtin().items()
                  if key in {f.name for f in dataclasses.fields(cls.Settings)}]
        where = path.rsplit(".", 1)[0]
        hint = (f"; it is a setting of {', '.join(owners)}: {where}.{owners[0]}.{key}" if owners else
                f"; a {registry.what}'s settings go under its name ({', '.join(registry.builtin())})")
        raise SpecError(f"unknown key '{path}'; known keys here: {', '.join(sorted(known))}{hint}") from None


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(value: Any) -> str:
    """A value as an error line shows it: its type and at most 60 characters of it."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _number(hint: type, value: Any, path: str, finite: bool = True) -> int | float:
    """An int or float field's value: a finite number in range. YAML 1.1 reads 5e-4 (no dot) as a
    string, so numeric text is converted, but only plain ASCII numbers (not 'inf', 'nan' or '1_0')."""
    if isinstance(value, str) and (_INT_TEXT if hint is int else _FLOAT_TEXT).fullmatch(value.strip()):
        value = hint(value.strip())
    if hint is float and isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT:
        value = float(value)
    if not isinstance(value, hint) or isinstance(value, bool):
        raise SpecError(f"'{path}' must be {'an integer' if hint is int else 'a number'}, got {_shown(value)}")
    return _scalar(value, path, finite)


def _scalar(value: Any, path: str, finite: bool = True) -> Any:
    """`value` itself when every number in it is finite and within MAX_INT; nested lists and mappings
    (the free-form fields: folds, pca_dims, search, ...) are checked throughout."""
    if isinstance(value, float) and not math.isfinite(value) and finite:
        raise SpecError(f"'{path}' must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise SpecError(f"'{path}' must be at most {MAX_INT} in size, got {_shown(value)}")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _scalar(item, path, finite)
    return value


def _coerce(hint: Any, value: Any, path: str, finite: bool = True) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, path, finite)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(hint, value, path, finite)
    if origin is list:
        if isinstance(value, dict):
            raise SpecError(f"'{path}' must be a list (or one value), got {_shown(value)}")
        return [_coerce(args[0], v, path, finite) for v in (value if isinstance(value, list) else [value])]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"'{path}' must be a mapping of keys, got {_shown(value)}")
        return {_coerce(args[0], k, f"{path} key", finite): _coerce(args[1], v, f"{path}.{k}", finite)
                for k, v in value.items()}
    if hint is Any:
        return _scalar(value, path, finite)
    if hint in (int, float):
        return _number(hint, value, path, finite)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # YAML reads 007 as 7 and 1e3 as 1000.0: taking them as text would silently change them
        raise SpecError(f"'{path}' must be text, but YAML read it as the number {value!r}: quote the value")
    if isinstance(value, hint):
        return value
    raise SpecError(f"'{path}' must be {hint.__name__}, got {_shown(value)}")


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a spec would otherwise go silently wrong: a key given
    twice is an error (PyYAML keeps the last), and dates stay text (a name such as 2024-01-01)."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _mapping(loader: _SpecLoader, node: yaml.MappingNode):
    data = {}
    yield data  # as SafeLoader does, so an anchored mapping can be referred to inside itself
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden: not a repeat
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, typing.Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice",
                                                        key_node.start_mark)
            seen.add(key)
    data.update(loader.construct_mapping(node))


_SpecLoader.add_constructor("tag:yaml.org,2002:map", _mapping)

# the sections every spec.yaml the tool wrote holds (SPEC §4), since its first version
STORED_KEYS = ("name", "storage", "data", "folds", "seeds", "base_net", "features", "corrector", "resources")
MAX_SPEC_BYTES = 1 << 20  # a spec is a few kB
MAX_NODES = 10_000  # values in a spec once its aliases are expanded (a spec has a few hundred)


def _check_size(value: Any) -> None:
    """Walk `value` with its aliases expanded, stopping once more than MAX_NODES were seen: a few
    hundred bytes of nested aliases ("billion laughs") otherwise expand to gigabytes downstream."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise SpecError(f"the spec expands to more than {MAX_NODES} values (YAML aliases nested inside "
                            "each other?); write the values out")
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item


def _yaml(text: str) -> Any:
    """`text` parsed with the spec loader, bounded in size; YAMLError on bad YAML or a repeated key."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {len(text)} characters long, more than a spec needs ({MAX_SPEC_BYTES}); "
                        "pass a sweep spec such as sweeps/default.yaml")
    try:
        value = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (_SpecLoader is a SafeLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    _check_size(value)
    return value


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in a few words, with the line it is on."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        return f"{e.problem} (line {e.problem_mark.line + 1})"
    return str(e).splitlines()[0]


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SpecError(f"--set '{text}' must look like key=value, e.g. data.path=/x")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), _yaml(value)
    except yaml.YAMLError as e:
        raise SpecError(f"--set {text}: the value is not valid YAML ({_yaml_problem(e)}); "
                        "quote text, e.g. --set \"data.path='[x'\"") from None


def spec_from_dict(raw: dict[str, Any], overrides: list[str] = ()) -> Spec:
    """A spec the user runs (a sweep's trials get theirs this way): the modules it names are imported."""
    with user_code():
        return _spec(raw, overrides)


def _plain(value: Any, path: str = "") -> None:
    """A SpecError naming the first value that is no mapping, list, number or text: YAML's !!set and !!binary."""
    if isinstance(value, (set, frozenset, bytes, bytearray)):
        raise SpecError(f"'{path or 'spec'}' must be a list, a number or text, got {_shown(value)}")
    for key, item in value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ():
        _plain(item, f"{path}.{key}" if path and isinstance(value, dict) else path or str(key))


def _spec(raw: dict[str, Any], overrides: list[str] = ()) -> Spec:
    _plain(raw)
    raw = json.loads(json.dumps(raw))  # deep copy; overrides must not leak into the caller's dict
    for text in overrides:
        keys, value = parse_override(text)
        _plain(value, ".".join(keys))
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
    raw["scheduler"] = _scheduler_section(raw.get("scheduler"))
    spec = from_mapping(Spec, raw, "")
    for section, key in ((spec, "storage"), (spec.data, "path"), (spec.data, "cache_dir")):
        if isinstance(getattr(section, key), str) and getattr(section, key).startswith("~"):
            setattr(section, key, os.path.expanduser(getattr(section, key)))  # as a shell would
    return validate(spec)


def _scheduler_section(value: Any) -> Any:
    """`scheduler` as its section: `scheduler: asha` names it, `scheduler: {asha: {...}}` names it with its
    settings; a section that already says `name` (as a stored spec.yaml does) is as written."""
    if value is None or isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value and len(value) == 1:
        (name, settings), = value.items()
        return {"name": name, name: settings}
    return value


def load_spec(path: str | Path, overrides: list[str] = (), stored: bool = False) -> Spec:
    """The spec in a YAML file. `stored`: a run directory's spec.yaml, which this tool wrote itself: one that
    is not a whole spec is refused rather than read as the default spec, and one an older version wrote (a
    key since moved or renamed) is refused in one line naming the key."""
    path = Path(path)
    what = f"the run's spec file '{path}'" if stored else f"spec file '{path}'"
    fix = "rerun one trial of the run's spec (`correctsweep trial SPEC --fold J`) to rewrite it" if stored else \
        "pass a YAML file such as sweeps/default.yaml"
    if not path.is_file():
        raise SpecError(f"{what} not found; {fix}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{what} is {path.stat().st_size} bytes, more than a spec needs; {fix}")
    try:
        raw = _yaml(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise SpecError(f"{what} is not text; {fix}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{what} is not valid YAML: {_yaml_problem(e)}; {fix}") from None
    except SpecError as e:
        raise SpecError(f"{what}: {e}") from None
    if raw is None and not stored:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{what} must be a mapping of keys (name:, data:, ...), not {_shown(raw)}; {fix}")
    if not stored:
        return spec_from_dict(raw, overrides)
    # the tool writes every section, so a missing one means a damaged file, not the default's value
    missing = [key for key in STORED_KEYS if key not in raw]
    if missing:
        raise SpecError(f"{what} lacks {', '.join(missing)}, so it is not the spec the run was made with; {fix}")
    try:  # a run directory's: it names only modules already imported (see plugins.user_code)
        return _spec(raw, overrides)
    except UntrustedCode as e:
        raise UntrustedCode(f"{what}: {e}") from None
    except SpecError as e:
        raise SpecError(f"{what}: {e}; {fix}") from None
