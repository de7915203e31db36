"""Write the options reference (docs/operators/options.md) from the plugin's config model.

The reference is generated so that it cannot drift from `fps_remote_kernels/config.py`: every
field of `RemoteKernelsConfig`, with its type, default and description, and the keys of a
`remotes` entry from that entry's own model. Only the block between the markers is rewritten;
hand-written text around it stays.

    python scripts/options_doc.py            # print the block
    python scripts/options_doc.py --write    # rewrite it in docs/operators/options.md
    python scripts/options_doc.py --check    # exit 1 if the page differs (what the tests run)
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "operators" / "options.md"
BEGIN = "<!-- options:begin -->"
END = "<!-- options:end -->"
PREFIX = "remote_kernels"

# Run from a checkout without installing: the package is next to this script.
sys.path.insert(0, str(REPO))


def type_name(annotation: Any) -> str:
    """A type as an operator reads it: `float`, `str | None`, `list[str]`, `"a" | "b"`."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        return " \\| ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object"  # a nested model: its keys are listed in their own table
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def bounds(field: FieldInfo) -> str:
    """The numeric bounds pydantic enforces (`Field(ge=...)` and the like), if any."""
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    found = []
    for item in field.metadata:
        for name, sign in signs.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def default_text(field: FieldInfo) -> str:
    """The default as it would be written on the command line; `(required)` if none."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "—"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool | list | dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, int) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        mib = value // (1024 * 1024)
        size = f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
        return f"`{value}` ({size})"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell, shown as written: a `<name>` outside
    code spans would be read as an HTML tag and vanish."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def nested_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a field whose values are models (`list[RemoteConfig]`), if any."""
    candidates = [field.annotation, *typing.get_args(field.annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def table(model: type[BaseModel], name_of: Any, same_as: dict[str, FieldInfo]) -> list[str]:
    lines = ["| option | type | default | description |", "|---|---|---|---|"]
    # Required keys first (a `remotes` entry's name), then in the model's order.
    ordered = sorted(model.model_fields.items(), key=lambda item: not item[1].is_required())
    for name, field in ordered:
        kind = type_name(field.annotation)
        limits = bounds(field)
        if limits:
            kind = f"{kind}, {limits}"
        description = field.description or ""
        top = same_as.get(name)
        if top is not None and top.description == field.description:
            description = f"As `{PREFIX}.{name}`, for this remote."
        lines.append(f"| `{name_of(name)}` | {kind} | {default_text(field)} | "
                     f"{cell(description)} |")
    return lines


def render() -> str:
    """The generated block, markers included."""
    from fps_remote_kernels.config import RemoteKernelsConfig

    fields = RemoteKernelsConfig.model_fields
    lines = [
        BEGIN,
        "<!-- Generated by `python scripts/options_doc.py --write` from "
        "fps_remote_kernels/config.py: edit the descriptions there, not here. -->",
        "",
        f"## Every option (`{PREFIX}.*`)",
        "",
        *table(RemoteKernelsConfig, lambda name: f"{PREFIX}.{name}", {}),
    ]
    for name, field in fields.items():
        model = nested_model(field)
        if model is None:
            continue
        lines += [
            "",
            f"## The keys of one `{PREFIX}.{name}` entry",
            "",
            f"`{PREFIX}.{name}` is a JSON list of objects with these keys:",
            "",
            *table(model, lambda key, field_name=name: f"{field_name}[].{key}", fields),
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def current_block(page: str) -> str | None:
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        return None
    return page[start:end + len(END)] + "\n"


def rewritten(page: str, block: str) -> str:
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{PAGE.relative_to(REPO)} has no {BEGIN} ... {END} block")
    after = page[end + len(END):].removeprefix("\n")
    return page[:start] + block + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the block in the page")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if the page's block is not the generated one")
    args = parser.parse_args(argv)
    block = render()
    if args.write:
        page = PAGE.read_text()
        PAGE.write_text(rewritten(page, block))
        return 0
    if args.check:
        if current_block(PAGE.read_text()) != block:
            print(f"{PAGE.relative_to(REPO)} is out of date: run "
                  "python scripts/options_doc.py --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
