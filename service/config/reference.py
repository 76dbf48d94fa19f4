"""docs/configuration.md, generated from the settings' declarations.

`python -m service.config.reference > docs/configuration.md` (`make docs`) writes it;
`--check <file>` exits 1 when the file is not what the declarations generate (a unit test
and the pre-commit hook).
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from service.config.declare import View
from service.config.settings import VIEWS

INTRO = """\
# Configuration reference

Generated from the settings' declarations (`service/config/`) by `make docs`; do not edit
by hand.

Every setting is a `RILL_`-prefixed environment variable, or the same name without the
prefix, lower case, in a YAML file named by `RILL_CONFIG` (the environment wins over the
file). A wrong value stops `rill` at start with a message that names the variable and the
fix; `rill check-config` checks a configuration without connecting to anything. The
defaults run the demo pipeline.
"""


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`"
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _choices(annotation: Any) -> list[str]:
    """The values a Literal setting (optionally None) takes."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in args]
    return [c for a in args if a is not type(None) for c in _choices(a)]


def _bounds(info: FieldInfo) -> str:
    """The bounds pydantic checks (its `Ge`, `Gt`, `Le` metadata), as text."""
    signs = {"ge": ">=", "gt": ">", "le": "<="}
    parts = [
        f"{sign} {getattr(m, attr)}"
        for m in info.metadata
        for attr, sign in signs.items()
        if getattr(m, attr, None) is not None
    ]
    return f" Bounds: {', '.join(parts)}." if parts else ""


def _rows(view: type[View]) -> Iterator[str]:
    for name, info in view.model_fields.items():
        default = info.get_default(call_default_factory=True)
        meaning = info.description or ""
        choices = _choices(info.annotation)
        if choices:
            meaning += " One of " + ", ".join(f"`{c}`" for c in choices) + "."
        meaning += _bounds(info)
        yield f"| `{view.env(name)}` | {_shown(default)} | {meaning} |"


def reference() -> str:
    """The whole configuration reference, as Markdown."""
    parts = [INTRO.rstrip("\n")]
    for view in VIEWS:
        title, _, rest = (view.__doc__ or view.__name__).partition(": ")
        parts.append(f"\n## {title}\n\n{rest[:1].upper()}{rest[1:]}\n")
        parts.append("| variable | default | meaning |\n|---|---|---|")
        parts.extend(_rows(view))
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    """Print the reference, or with `--check <file>` compare it with the file."""
    if argv[:1] == ["--check"]:
        path = Path(argv[1])
        if path.read_text() == reference():
            return 0
        sys.stderr.write(f"{path} is out of date: run make docs\n")
        return 1
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
