"""docs/design.md summarises interfaces whose one source is code; these keep the summaries
equal to their sources: the category ids, causes and roles (analysis/categories.py), the
wire records (wire/schema.py) and the commands (cli/commands.py)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

import kubectl_offwake
from kubectl_offwake.analysis.categories import CATEGORIES, CAUSES, ROLES
from kubectl_offwake.cli.commands import COMMANDS
from kubectl_offwake.wire.schema import RECORD_SHAPES

from .docblocks import REPO
from .reposcan import inline_code, tracked

DESIGN = (REPO / "docs" / "design.md").read_text(encoding="utf-8")


def section(number: str) -> str:
    """The text of one numbered section, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(number)}[ .].*?$(.*?)(?=^#)", DESIGN + "\n#",
                      re.M | re.S)
    assert match, f"docs/design.md has no section {number}"
    return match.group(1)


def code_words(text: str) -> List[str]:
    return re.findall(r"`([^`]+)`", text)


def test_category_ids_are_the_tables() -> None:
    text = section("3.4")
    listed = [w for w in code_words(text.split("A category is decided")[0])
              if not w.endswith(".py") and "/" not in w and w != "CATEGORIES"]
    assert listed == [c.id for c in CATEGORIES]


def test_causes_and_roles_are_the_tables() -> None:
    text = " ".join(section("3.4").split())  # wherever the lines wrap
    causes, roles = text.split("The `cause`")[1].split("Envoy thread roles")
    assert [w for w in code_words(causes) if w in CAUSES] == list(CAUSES)
    assert [w for w in code_words(roles) if w in ROLES] == list(ROLES)


def test_wire_record_table_is_the_schema() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \|", section("3.2"), re.M)
    assert rows == list(RECORD_SHAPES)


def test_every_command_is_in_the_synopsis() -> None:
    synopsis = section("3.1").split("```")[1]
    shown = set(re.findall(r"^kubectl offwake (\w+)", synopsis, re.M)) - {"TARGET"}
    assert shown == {c.name for c in COMMANDS if not c.hidden}
    assert "kubectl offwake TARGET" in synopsis  # the hidden `trace` command


# -- the names the walk-through gives exist ------------------------------------------------------

#: Inline code that names code: a call (``switch_in()``, ``render/table.render()``) or a
#: dotted name with a class in it (``model.Stack``, ``Recording.failures``).
_CODE_NAME = re.compile(r"^[A-Za-z_][\w/.]*(?:\(\))?$")
_CLASS_PART = re.compile(r"(?:^|[./])[A-Z][a-z]\w*")


def _modules() -> Dict[str, ModuleType]:
    found = {"kubectl_offwake": kubectl_offwake}
    for info in pkgutil.walk_packages(kubectl_offwake.__path__, "kubectl_offwake."):
        if not info.name.endswith("__main__"):
            found[info.name] = importlib.import_module(info.name)
    return found


def _has(obj: Any, name: str) -> Optional[Any]:
    """``obj.name``, also a dataclass field or an annotated attribute of a class."""
    if hasattr(obj, name):
        return getattr(obj, name)
    for klass in getattr(obj, "__mro__", ()):
        if name in getattr(klass, "__annotations__", {}):
            return object()
    return None


def _resolves(token: str, modules: Dict[str, ModuleType], bpf: str) -> bool:
    parts = token.removesuffix("()").replace("/", ".").split(".")
    starts: List[Tuple[Any, List[str]]] = []
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        starts += [(m, parts[n:]) for name, m in modules.items()
                   if name == prefix or name.endswith("." + prefix)]
    if len(parts) == 1 and f"{parts[0]}(" in bpf:
        return True  # a function of the BPF program
    for module in modules.values():  # a class (or function) without its module
        for name, value in vars(module).items():
            if name == parts[0]:
                starts.append((value, parts[1:]))
            elif isinstance(value, type) and value.__module__ == module.__name__ \
                    and len(parts) == 1 and _has(value, parts[0]) is not None:
                return True  # a method named alone, e.g. `_wakeup()`
    for obj, rest in starts:
        for name in rest:
            obj = _has(obj, name)
            if obj is None:
                break
        else:
            return True
    return False


def test_code_named_in_the_design_exists() -> None:
    """Every function, method and class docs/design.md names (the walk-through's
    ``Snapshotter.take()``, ``RecordingBuilder._wakeup()``, ``switch_in()`` of the BPF
    program) exists under that name, so a rename shows here."""
    modules = _modules()
    bpf = (REPO / "bpf" / "offwake.bpf.c").read_text(encoding="utf-8")
    files = tracked()
    named = [w for _, w in inline_code(DESIGN) if _CODE_NAME.match(w)
             and (w.endswith("()") or _CLASS_PART.search(w))
             and not any(p == w or p.endswith("/" + w) for p in files)]  # `image/Dockerfile`
    assert len(named) > 30, named
    missing = sorted({w for w in named if not _resolves(w, modules, bpf)})
    assert missing == [], f"docs/design.md names code that does not exist: {missing}"


def test_the_name_check_can_fail() -> None:
    modules = _modules()
    assert _resolves("snapshot.Snapshotter.take()", modules, "")
    assert _resolves("Recording.failures", modules, "")
    assert _resolves("switch_in()", modules, "void switch_in(u64 now)")
    assert not _resolves("snapshot.Snapshotter.nothing()", modules, "")
    assert not _resolves("NoSuchClass.x", modules, "")
    assert not _resolves("no_such_function()", modules, "")
