"""docs/design.md summarises interfaces whose one source is code; these keep the summaries
equal to their sources: the category ids, causes and roles (analysis/categories.py), the
wire records (wire/schema.py) and the commands (cli/commands.py)."""

from __future__ import annotations

import re
from typing import List

from kubectl_offwake.analysis.categories import CATEGORIES, CAUSES, ROLES
from kubectl_offwake.cli.commands import COMMANDS
from kubectl_offwake.wire.schema import RECORD_SHAPES

from .docblocks import REPO

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
