"""Server-side execution, partial: how kernel outputs are written into a real Y notebook
(jupyter_ydoc's YNotebook, the model fps-yrooms saves to disk)."""

from __future__ import annotations

import pytest
from jupyter_ydoc import YNotebook

from fps_remote_kernels.execution.outputs import CellOutputs, process_text, truncation_marker

pytestmark = pytest.mark.fast


def _cell() -> tuple[YNotebook, CellOutputs]:
    notebook = YNotebook()
    notebook.set({"cells": [{"cell_type": "code", "source": "x", "metadata": {}, "id": "c1",
                             "outputs": [], "execution_count": None}],
                  "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    return notebook, CellOutputs(notebook.ycells[0])


def _outputs(notebook: YNotebook) -> list[dict]:
    return notebook.get()["cells"][0]["outputs"]


def test_stream_appends_to_the_last_stream_of_the_same_name() -> None:
    """Two prints make one stdout output; a stderr line between them makes three."""
    notebook, cell = _cell()
    cell.start()
    cell.handle("stream", {"name": "stdout", "text": "a\n"})
    cell.handle("stream", {"name": "stdout", "text": "b\n"})
    assert _outputs(notebook) == [{"output_type": "stream", "name": "stdout", "text": "a\nb\n"}]
    cell.handle("stream", {"name": "stderr", "text": "e\n"})
    cell.handle("stream", {"name": "stdout", "text": "c\n"})
    assert [o["text"] for o in _outputs(notebook)] == ["a\nb\n", "e\n", "c\n"]


def test_print_after_display_adds_a_stream() -> None:
    """A print after a display (fps-kernels' KeyError) adds a new stream output."""
    notebook, cell = _cell()
    cell.start()
    cell.handle("display_data", {"data": {"text/plain": "1"}, "metadata": {"m": 1},
                                 "transient": {}})
    cell.handle("stream", {"name": "stdout", "text": "after\n"})
    outputs = _outputs(notebook)
    assert outputs[0] == {"output_type": "display_data", "data": {"text/plain": "1"},
                          "metadata": {"m": 1}}
    assert outputs[1]["text"] == "after\n"


def test_carriage_return_rewrites_the_line() -> None:
    """`\\r` progress updates leave one line, as in JupyterLab's output area."""
    notebook, cell = _cell()
    cell.start()
    for step in range(3):
        cell.handle("stream", {"name": "stderr", "text": f"\r{step}/3"})
    cell.handle("stream", {"name": "stderr", "text": "\rdone\n"})
    assert _outputs(notebook)[0]["text"] == "done\n"
    assert process_text("", 0, "ab\bc") == ("ac", 2)


def test_clear_output_wait_clears_at_the_next_output() -> None:
    """clear_output(wait=True) keeps the outputs until the next one arrives."""
    notebook, cell = _cell()
    cell.start()
    cell.handle("stream", {"name": "stdout", "text": "old\n"})
    cell.handle("clear_output", {"wait": True})
    assert len(_outputs(notebook)) == 1
    cell.handle("stream", {"name": "stdout", "text": "new\n"})
    assert [o["text"] for o in _outputs(notebook)] == ["new\n"]
    cell.handle("clear_output", {"wait": False})
    assert _outputs(notebook) == []


def test_update_display_data_replaces_by_display_id() -> None:
    """update_display_data replaces the output shown with its display_id only."""
    notebook, cell = _cell()
    cell.start()
    cell.handle("display_data", {"data": {"text/plain": "v1"}, "metadata": {},
                                 "transient": {"display_id": "d"}})
    cell.handle("display_data", {"data": {"text/plain": "other"}, "metadata": {},
                                 "transient": {"display_id": "e"}})
    cell.handle("update_display_data", {"data": {"text/plain": "v2"}, "metadata": {},
                                        "transient": {"display_id": "d"}})
    assert [o["data"]["text/plain"] for o in _outputs(notebook)] == ["v2", "other"]


def test_running_then_idle_with_the_count() -> None:
    """The cell is `running` ([*]) until the reply, then idle with the reply's count."""
    notebook, cell = _cell()
    cell.start()
    assert notebook.ycells[0]["execution_state"] == "running"
    cell.handle("execute_result", {"data": {"text/plain": "2"}, "metadata": {},
                                   "execution_count": 3})
    cell.finish(3)
    assert notebook.ycells[0]["execution_state"] == "idle"
    saved = notebook.get()["cells"][0]
    assert saved["execution_count"] == 3
    assert saved["outputs"][0]["execution_count"] == 3


def test_aborted_reply_goes_idle_without_a_count() -> None:
    """An aborted execution ends idle, with no count."""
    notebook, cell = _cell()
    cell.start()
    cell.finish(None)
    assert notebook.ycells[0]["execution_state"] == "idle"
    assert notebook.get()["cells"][0]["execution_count"] is None


def test_output_over_the_limit_ends_with_the_marker() -> None:
    """Output beyond the cell's limit is cut at the limit, followed by a stderr output that
    names the option; nothing after it is written."""
    notebook, cell = _cell()
    cell.limit = 10
    cell.start()
    cell.handle("stream", {"name": "stdout", "text": "01234"})
    cell.handle("stream", {"name": "stdout", "text": "56789abc"})
    cell.handle("stream", {"name": "stdout", "text": "more"})
    cell.handle("display_data", {"data": {"text/plain": "x"}, "metadata": {}})
    outputs = _outputs(notebook)
    assert outputs[0]["text"] == "0123456789"
    assert outputs[1]["name"] == "stderr"
    assert outputs[1]["text"] == truncation_marker(10)
    assert len(outputs) == 2


def test_many_lines_in_many_chunks_read_as_one_text() -> None:
    """Chunks that split lines and mix `\\r` and `\\b` give the same text as one write."""
    text = "".join(f"{i}\r{i + 1}\bx\n" if i % 3 else f"{i}\n" for i in range(3000))
    notebook, cell = _cell()
    cell.start()
    for start in range(0, len(text), 7):
        cell.handle("stream", {"name": "stdout", "text": text[start:start + 7]})
    assert _outputs(notebook)[0]["text"] == process_text("", 0, text)[0]
