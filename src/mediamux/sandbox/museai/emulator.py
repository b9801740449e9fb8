"""``MuseaiEmulator``: the two muse.ai hosts as ASGI apps over one shared state (see the package docstring)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from mediamux.sandbox.museai.routes_files import FilesHost
from mediamux.sandbox.museai.routes_jobs import JobsHost
from mediamux.sandbox.museai.web import build_app


class MuseaiEmulator(FilesHost, JobsHost):
    def _apps(self) -> tuple[Starlette, Starlette]:
        api_routes = self._api_routes()
        app = self._build(api_routes + self._cdn_routes(), prefix="")
        jobs_app = self._build(self._job_routes() + api_routes, prefix="jobs:")
        return app, jobs_app

    def _build(self, routes: list[BaseRoute], *, prefix: str) -> Starlette:
        return build_app(
            routes,
            log=self.requests,
            prefix=prefix,
            on_request=self.advance,
            faults=self.faults,
            valid_key=self._valid_key,
        )
