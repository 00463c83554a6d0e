"""Checks a decoded wire record against the TypedDicts of kubectl_offwake/wire/schema.py.

mypy checks the code that builds records; this checks records themselves (what a collector
really wrote), so a field the schema does not list, a required field left out or a value
of another type is found at run time as well: every key against the shape's required and
optional keys, every value against the key's annotation (nested TypedDicts, lists, dicts,
``Literal``, ``Optional``; an int is a float, a bool is not an int).
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Union, get_args, get_origin, get_type_hints

from kubectl_offwake.wire.schema import RECORD_SHAPES

_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(shape: type) -> Dict[str, Any]:
    found = _HINTS.get(shape)
    if found is None:
        found = _HINTS[shape] = get_type_hints(shape)
    return found


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__required_keys__")


def value_problems(value: Any, tp: Any, where: str) -> List[str]:
    """What is wrong with ``value`` as a ``tp`` (empty when nothing)."""
    origin = get_origin(tp)
    if tp is Any:
        return []
    if origin is Literal:
        ok = any(type(value) is type(a) and value == a for a in get_args(tp))
        return [] if ok else [f"{where} is {value!r}, not one of {get_args(tp)}"]
    if origin is Union:
        if any(not value_problems(value, arm, where) for arm in get_args(tp)):
            return []
        return [f"{where} is {value!r}, which fits none of {tp}"]
    if tp is type(None):
        return [] if value is None else [f"{where} is {value!r}, not null"]
    if origin is list:
        if type(value) is not list:
            return [f"{where} is {type(value).__name__}, not a list"]
        (item,) = get_args(tp)
        return [p for i, v in enumerate(value) for p in value_problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if type(value) is not dict:
            return [f"{where} is {type(value).__name__}, not an object"]
        key_tp, item_tp = get_args(tp)
        out: List[str] = []
        for k, v in value.items():
            out += value_problems(k, key_tp, f"{where} key {k!r}")
            out += value_problems(v, item_tp, f"{where}[{k!r}]")
        return out
    if _is_typeddict(tp):
        if type(value) is not dict:
            return [f"{where} is {type(value).__name__}, not an object"]
        return shape_problems(value, tp, where)
    if tp is float:
        ok = type(value) in (int, float)
    elif tp in (int, str, bool):
        ok = type(value) is tp
    else:
        raise TypeError(f"{where}: the checker does not know {tp!r}; teach it")
    return [] if ok else [f"{where} is {type(value).__name__} {value!r}, not {tp.__name__}"]


def shape_problems(record: Dict[str, Any], shape: type, where: str = "") -> List[str]:
    """What keeps ``record`` from being a ``shape`` (a TypedDict): keys, then values."""
    required = shape.__required_keys__  # type: ignore[attr-defined]
    known = required | shape.__optional_keys__  # type: ignore[attr-defined]
    name = where or shape.__name__
    out = [f"{name} lacks required {k!r}" for k in sorted(required - record.keys())]
    out += [f"{name} has {k!r}, which the schema does not list"
            for k in sorted(record.keys() - known)]
    hints = _hints(shape)
    for key in sorted(record.keys() & known):
        out += value_problems(record[key], hints[key], f"{name}.{key}")
    return out


def record_problems(record: Dict[str, Any]) -> List[str]:
    """Empty when ``record`` is one of the shapes its ``type`` has; else why it is none."""
    shapes = RECORD_SHAPES.get(record.get("type"))  # type: ignore[arg-type]
    if shapes is None:
        return [f"record type {record.get('type')!r} has no TypedDict in wire/schema.py"]
    tried = [shape_problems(record, shape) for shape in shapes]
    if any(not problems for problems in tried):
        return []
    return min(tried, key=len)


def matching_shape(record: Dict[str, Any]) -> type:
    """The one shape ``record`` is (AssertionError, saying why, when it is none)."""
    shapes = RECORD_SHAPES[record["type"]]
    fits = [shape for shape in shapes if not shape_problems(record, shape)]
    assert len(fits) == 1, record_problems(record) or f"{record} fits {fits}"
    return fits[0]
