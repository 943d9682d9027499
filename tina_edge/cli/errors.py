"""One decorator for the errors a user's input or files cause in the server commands.

Why: the train and export stages signal bad input the Python way (ValueError for a bad value,
OSError for a missing or unreadable file, onnx/onnxruntime/protobuf errors for a file that is not
the model it should be). Each command used to wrap its stage in the same try/except; `user_errors`
does it once: such an error becomes a `TinaEdgeError`, which the CLI prints as one line with exit
status 2. Everything else (a bug) still raises with its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..runtime.errors import TinaEdgeError

F = TypeVar("F", bound=Callable[..., Any])

# the libraries whose own exception types mean "this file is not a usable model"
_FILE_FORMAT_LIBRARIES = ("onnx", "onnxruntime", "google.protobuf")


def is_bad_file_error(e: BaseException) -> bool:
    """An exception raised by onnx, onnxruntime or protobuf for a file they cannot use."""
    module = type(e).__module__ or ""
    return any(module == lib or module.startswith(lib + ".") for lib in _FILE_FORMAT_LIBRARIES)


def user_errors(f: F) -> F:
    """Run a click command; ValueError, OSError and onnx/onnxruntime file errors become TinaEdgeError."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (TinaEdgeError, click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (ValueError, OSError) as e:
            raise TinaEdgeError(str(e)) from None
        except Exception as e:
            if is_bad_file_error(e):
                raise TinaEdgeError(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
            raise

    return wrapper  # type: ignore[return-value]
