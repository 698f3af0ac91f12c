"""The CLI's one place for errors: one unwrapped line on stderr, the text taken literally."""

from __future__ import annotations

import pytest

from streamalloc import cli
from streamalloc.errors import StreamallocError


def test_an_error_is_one_line_with_its_text_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    text = "[bold]topic[/bold] t-1 is not co-partitioned: " + "inventory has 4 partitions " * 8
    with pytest.raises(SystemExit) as exited:
        cli._fail(StreamallocError(text))
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # never wrapped at the terminal width, however long
    assert err == f"error: {text}\n"  # brackets are not read as markup
