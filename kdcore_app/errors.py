"""The UI boundary: library errors become one-line messages in the page instead of tracebacks."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from kdcore.errors import KDCoreError

log = logging.getLogger("kdcore.app")
F = TypeVar("F", bound=Callable[..., Any])


def require(value: Any, message: str) -> None:
    """Stop the callback with ``message`` shown to the user when ``value`` is empty."""
    if not value:
        raise gr.Error(message, print_exception=False)


def user_errors(fn: F) -> F:
    """Show :class:`KDCoreError` (and, as one line, anything unexpected) as a UI error instead of a traceback.

    Works for plain callbacks and for generator callbacks (streamed outputs).
    """

    def report(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, KDCoreError):
            return gr.Error(str(e), print_exception=False)
        log.exception("callback %s failed", fn.__name__)
        first_line = str(e).splitlines()[0] if str(e) else ""
        return gr.Error(f"{fn.__name__} failed: {type(e).__name__}: {first_line}", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise report(e) from None
        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise report(e) from None
    return wrapper  # type: ignore[return-value]
