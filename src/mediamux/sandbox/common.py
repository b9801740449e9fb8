"""Small rules every emulator follows the same way, kept in one place so that they cannot drift apart."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


def public_origin(base_url: str, request: Request) -> str:
    """The origin for URLs an emulator hands out: the one clients were given, else the one they called."""
    # Answers carry URLs that clients fetch later (data, results); they must name the origin the client was
    # configured with, which can differ from the request's Host (a proxy, an in-process test transport).
    return base_url.rstrip("/") or str(request.base_url).rstrip("/")


def scratch_dir(owner: object, prefix: str) -> tuple[Path, weakref.finalize[Any, Any]]:
    """A temporary folder and its remover: call it to remove the folder now, else it goes with `owner`."""
    # weakref.finalize rather than TemporaryDirectory: the latter warns (ResourceWarning) when it is
    # cleaned up implicitly, and emulators are often simply dropped at the end of a test.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    return root, weakref.finalize(owner, shutil.rmtree, root, ignore_errors=True)


def base_name(filename: str) -> str:
    """The last part of a file name a client sent, whether its system separates folders with / or \\."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


class Refusal(Exception):
    """Stops a request from any depth of its handler with an answer already shaped in the provider's style."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response
