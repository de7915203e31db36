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

import json
import re
from typing import Any

from pycrdt import Array, Map, Text

_CONTROL = re.compile(r"[\r\b\n]")
_REWRITE = re.compile(r"[\r\b]")


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
    line = _Line()
    frozen = text.rfind("\n", 0, cursor) + 1  # \r and \b never reach before this
    line.text, line.cursor = text[frozen:], cursor - frozen
    written = line.write(new)
    return text[:frozen] + written + line.text, frozen + len(written) + line.cursor


class _Line:
    """The last line of a stream's text and the cursor in it: what `\\r` and `\\b` can still
    rewrite. Everything before the last `\\n` is final, so each chunk costs its own length
    plus the last line's, never the whole text's."""

    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0

    def write(self, new: str) -> str:
        """Write `new`; the text it made final (up to its last `\\n`)."""
        if self.cursor == len(self.text) and not _REWRITE.search(new):
            # Only newlines (the usual case): no loop over the lines.
            end = new.rfind("\n") + 1
            if not end:
                self.text += new
                self.cursor = len(self.text)
                return ""
            done = self.text + new[:end]
            self.text = new[end:]
            self.cursor = len(self.text)
            return done
        finished: list[str] = []
        line, cursor, position = list(self.text), self.cursor, 0
        for match in _CONTROL.finditer(new):
            chunk = new[position:match.start()]
            line[cursor:cursor + len(chunk)] = chunk
            cursor += len(chunk)
            control = match.group()
            if control == "\n":
                finished.append("".join(line))
                finished.append("\n")
                line, cursor = [], 0
            elif control == "\r":
                cursor = 0
            elif cursor > 0:
                del line[cursor - 1]
                cursor -= 1
            position = match.end()
        chunk = new[position:]
        line[cursor:cursor + len(chunk)] = chunk
        self.text, self.cursor = "".join(line), cursor + len(chunk)
        return "".join(finished)


class _Stream:
    """The last output, a stream: its name, the length of its final text in the Y text, and
    the line after it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.final = 0
        self.line = _Line()


def truncation_marker(limit: int) -> str:
    """What a cell shows where its output was cut, as jupyter_server warns when
    `iopub_data_rate_limit` drops output."""
    return (f"Output truncated: this cell's output reached {limit} bytes "
            "(remote_kernels.execution_output_limit); the rest was dropped.\n")


class CellOutputs:
    """The outputs of one execution of one Y cell (a `pycrdt.Map` of a YNotebook), at most
    `limit` bytes of them (characters of text, JSON of rich outputs): beyond it the cell gets
    a stderr output saying so, and nothing more."""

    def __init__(self, ycell: Map, limit: int | None = None) -> None:
        self.ycell = ycell
        self.limit = limit
        self._clear_next = False
        self._stream: _Stream | None = None
        self._display_ids: dict[str, list[int]] = {}
        self._held = 0  # bytes of the outputs before the current stream
        self.truncated = False

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
        self._reset()

    def finish(self, execution_count: int | None) -> None:
        with self.ycell.doc.transaction():
            if execution_count is not None:
                self.ycell["execution_count"] = float(execution_count)
            self.ycell["execution_state"] = "idle"

    def handle(self, msg_type: str, content: dict[str, Any]) -> None:
        """Write one iopub message of this execution."""
        if self.truncated:
            return
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

    def _reset(self) -> None:
        self._stream, self._display_ids, self._clear_next = None, {}, False
        self._held, self.truncated = 0, False

    def _clear(self) -> None:
        self.outputs.clear()
        self._reset()

    def _room(self) -> int | None:
        """Bytes still allowed, None without a limit."""
        if self.limit is None:
            return None
        stream = self._stream
        used = self._held + (stream.final + len(stream.line.text) if stream else 0)
        return max(self.limit - used, 0)

    def _truncate(self) -> None:
        assert self.limit is not None
        self._end_stream()
        self.outputs.append(Map({"output_type": "stream", "name": "stderr",
                                 "text": Text(truncation_marker(self.limit))}))
        self.truncated = True

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._held += self._stream.final + len(self._stream.line.text)
            self._stream = None

    def _add_stream(self, name: str, text: str) -> None:
        if self._clear_next:
            self._clear()
        room = self._room()
        cut = room is not None and len(text) > room
        if cut:
            text = text[:room]
        outputs = self.outputs
        stream = self._stream
        if stream is not None and stream.name == name and len(outputs):
            # Only the last line can change: the Y text is rewritten from there on.
            old = stream.line.text
            finished = stream.line.write(text)
            tail = finished + stream.line.text if finished else stream.line.text
            common = len(old) if tail.startswith(old) else _common_prefix(old, tail)
            ytext = outputs[len(outputs) - 1]["text"]
            if common < len(old):
                del ytext[stream.final + common:stream.final + len(old)]
            if common < len(tail):
                ytext.insert(stream.final + common, tail[common:])
            stream.final += len(finished)
        elif text or not cut:
            self._end_stream()
            stream = self._stream = _Stream(name)
            finished = stream.line.write(text)
            stream.final = len(finished)
            outputs.append(Map({"output_type": "stream", "name": name,
                                "text": Text(finished + stream.line.text)}))
        if cut:
            self._truncate()

    def _add_output(self, output_type: str, content: dict[str, Any]) -> None:
        if self._clear_next:
            self._clear()
        output = {k: v for k, v in content.items() if k != "transient"}
        output["output_type"] = output_type
        if output_type != "error":
            output.setdefault("metadata", {})
        self._end_stream()
        room = self._room()
        if room is not None:
            size = len(json.dumps(output, default=str))
            if size > room:
                self._truncate()
                return
            self._held += size
        outputs = self.outputs
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id and output_type == "display_data":
            self._display_ids.setdefault(str(display_id), []).append(len(outputs))
        outputs.append(Map(as_y_numbers(output)))

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
