"""Server-side execution: kernel messages written into a cell of the front's Y notebook.

This module writes a cell's outputs as JupyterLab's own executor does (`@jupyterlab/outputarea`,
`@jupyter/ydoc`); executor.py runs the cells and feeds it.

- `stream` is appended to the last output when that one is a stream of the same name; `\\r` and
  `\\b` rewrite the text as JupyterLab's output area does (progress bars stay one line);
- `display_data`, `execute_result` (with metadata) and `error` are added;
- `clear_output` clears, or with `wait=True` clears at the next output;
- `update_display_data` replaces every output shown with that `display_id`;
- `execution_state` is `"running"` while the cell runs (JupyterLab draws `[*]` only for that),
  then `"idle"`; the count comes from `execute_reply` (an aborted reply has none).
"""

from __future__ import annotations

import re
from typing import Any

from pycrdt import Array, Map, Text

_CONTROL = re.compile(r"[\r\b\n]")


def as_y_numbers(value: Any) -> Any:
    """`value` with ints as floats: Yjs numbers are floats (jupyter_ydoc converts them back)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: as_y_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_y_numbers(v) for v in value]
    return value


def process_text(text: str, cursor: int, new: str) -> tuple[str, int]:
    """`text` with `new` written at `cursor`, as a terminal does: `\\r` goes back to the start
    of the line, `\\b` erases the previous character of the line, `\\n` ends the text's line."""
    if cursor == len(text) and not _CONTROL.search(new):
        return text + new, len(text) + len(new)
    position = 0
    for match in _CONTROL.finditer(new):
        chunk = new[position:match.start()]
        text = text[:cursor] + chunk + text[cursor + len(chunk):]
        cursor += len(chunk)
        control = match.group()
        if control == "\n":
            text += "\n"
            cursor = len(text)
        elif control == "\r":
            while cursor > 0 and text[cursor - 1] != "\n":
                cursor -= 1
        elif cursor > 0 and text[cursor - 1] != "\n":
            text = text[:cursor - 1] + text[cursor:]
            cursor -= 1
        position = match.end()
    chunk = new[position:]
    text = text[:cursor] + chunk + text[cursor + len(chunk):]
    return text, cursor + len(chunk)


class CellOutputs:
    """The outputs of one execution of one Y cell (a `pycrdt.Map` of a YNotebook)."""

    def __init__(self, ycell: Map) -> None:
        self.ycell = ycell
        self._clear_next = False
        # The last output's stream text as written, and the cursor in it (for \r and \b).
        self._stream: tuple[str, str, int] | None = None  # (name, text, cursor)
        self._display_ids: dict[str, list[int]] = {}

    @property
    def outputs(self) -> Array:
        outputs = self.ycell.get("outputs")
        if not isinstance(outputs, Array):
            outputs = self.ycell["outputs"] = Array()
        return outputs

    def start(self) -> None:
        """The cell is queued or runs: no outputs, no count, `[*]`."""
        with self.ycell.doc.transaction():
            self.outputs.clear()
            self.ycell["execution_count"] = None
            self.ycell["execution_state"] = "running"
        self._stream, self._display_ids, self._clear_next = None, {}, False

    def finish(self, execution_count: int | None) -> None:
        with self.ycell.doc.transaction():
            if execution_count is not None:
                self.ycell["execution_count"] = float(execution_count)
            self.ycell["execution_state"] = "idle"

    def handle(self, msg_type: str, content: dict[str, Any]) -> None:
        """Write one iopub message of this execution."""
        with self.ycell.doc.transaction():
            if msg_type == "stream":
                self._add_stream(str(content.get("name") or "stdout"),
                                 str(content.get("text") or ""))
            elif msg_type in ("display_data", "execute_result", "error"):
                self._add_output(msg_type, content)
            elif msg_type == "clear_output":
                if content.get("wait"):
                    self._clear_next = True
                else:
                    self._clear()
            elif msg_type == "update_display_data":
                self._update_display(content)

    def _clear(self) -> None:
        self.outputs.clear()
        self._stream, self._display_ids, self._clear_next = None, {}, False

    def _add_stream(self, name: str, text: str) -> None:
        if self._clear_next:
            self._clear()
        outputs = self.outputs
        if self._stream is not None and self._stream[0] == name and len(outputs):
            _, old, cursor = self._stream
            new, cursor = process_text(old, cursor, text)
            ytext = outputs[len(outputs) - 1]["text"]
            common = len(old) if new.startswith(old) else _common_prefix(old, new)
            if common < len(old):
                del ytext[common:len(old)]
            if common < len(new):
                ytext.insert(common, new[common:])
            self._stream = (name, new, cursor)
            return
        new, cursor = process_text("", 0, text)
        outputs.append(Map({"output_type": "stream", "name": name, "text": Text(new)}))
        self._stream = (name, new, cursor)

    def _add_output(self, output_type: str, content: dict[str, Any]) -> None:
        if self._clear_next:
            self._clear()
        output = {k: v for k, v in content.items() if k != "transient"}
        output["output_type"] = output_type
        if output_type != "error":
            output.setdefault("metadata", {})
        outputs = self.outputs
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id and output_type == "display_data":
            self._display_ids.setdefault(str(display_id), []).append(len(outputs))
        outputs.append(Map(as_y_numbers(output)))
        self._stream = None

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        outputs = self.outputs
        for index in self._display_ids.get(str(display_id), []):
            if index < len(outputs):
                output = {"output_type": "display_data", "data": content.get("data") or {},
                          "metadata": content.get("metadata") or {}}
                outputs[index] = Map(as_y_numbers(output))


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
