"""The FastAPI app the plugin mounts at ``/mlops``: model pages, lineage pages and the stored
reports (Data Docs, validation results, snapshot manifests, drift reports).

Every route needs the same login as the Airflow UI (the api-server's JWT, from the UI's cookie or
a bearer token). Reports are served from fixed roots only (``pipeline_tasks.lineage.reports``). The
pages are rendered by ``pipeline_tasks.lineage.pages``; this module only wires HTTP to them.

Every response, errors and redirects included, carries the security headers of
``reports.security_headers``: stored reports, plots and JSON are sandboxed into an opaque origin
(their scripts run, but cannot use the Airflow UI's session); the plugin's own pages allow no
script at all.
"""

from __future__ import annotations


class LazyASGIApp:
    """An ASGI app built on its first request, so loading the plugin (which every task process
    does) imports neither FastAPI nor Airflow's API modules."""

    def __init__(self, factory):
        self._factory = factory
        self._app = None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


def create_app():
    import mimetypes
    import tempfile
    from pathlib import Path

    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    # the pages read MLflow and the lake with the credentials of their Airflow connections
    from mlops_airflow.connections import connected_config as load_config
    from mlops_airflow.links import ui_base_url
    from pipeline_tasks.core.http import strip_userinfo_deep, strip_userinfo_in_text
    from pipeline_tasks.lineage import pages as lineage_pages
    from pipeline_tasks.lineage import queries as lineage
    from pipeline_tasks.lineage import reports

    app = FastAPI(title="MLOps reports and lineage", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  dependencies=[Depends(requires_access_view(AccessView.WEBSITE))])

    def wants_html(request: Request) -> bool:
        return "/api/" not in request.url.path

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        # Outside the exception handlers, so refusals, 404s and login redirects get them too.
        response = await call_next(request)
        path, root = request.scope["path"], request.scope.get("root_path", "")
        route = path[len(root):] if root and path.startswith(root) else path
        response.headers.update(reports.security_headers(route))
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        # A browser without a session goes to the Airflow login and comes back; API clients
        # get the plain 401.
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)),
                                    status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(reports.ReportPathRefused)
    async def refused(request: Request, exc: Exception):
        return _error(request, 403, "Forbidden", str(exc))

    @app.exception_handler(reports.ReportNotFound)
    @app.exception_handler(lineage.LineageNotFound)
    async def not_found(request: Request, exc: Exception):
        return _error(request, 404, "Not found", str(exc))

    def _error(request: Request, code: int, status: str, message: str):
        if wants_html(request):
            return HTMLResponse(lineage_pages.render_error(status, message, load_config(),
                                                           ui_base_url()), status_code=code)
        return JSONResponse({"detail": strip_userinfo_in_text(message)}, status_code=code)

    @app.get("/")
    async def index() -> HTMLResponse:
        config = load_config()
        models = await run_in_threadpool(lineage.model_index, config)
        return HTMLResponse(lineage_pages.render_index(models, config, ui_base_url()))

    @app.get("/models/{model_name}")
    async def model_page(model_name: str) -> HTMLResponse:
        config = load_config()
        overview = await run_in_threadpool(lineage.model_overview, model_name, config)
        return HTMLResponse(lineage_pages.render_model(overview, config, ui_base_url()))

    @app.get("/models/{model_name}/versions/{version}")
    async def version_page(model_name: str, version: str) -> HTMLResponse:
        config = load_config()
        chain = await run_in_threadpool(lineage.version_lineage, model_name, version, config)
        return HTMLResponse(lineage_pages.render_version(chain, config, ui_base_url()))

    @app.get("/models/{model_name}/batch/{interval_key}")
    async def batch_page(model_name: str, interval_key: str) -> HTMLResponse:
        config = load_config()
        page = await run_in_threadpool(lineage.batch_run, model_name, interval_key, config)
        return HTMLResponse(lineage_pages.render_batch(page, config, ui_base_url()))

    @app.get("/models/{model_name}/champion")
    async def champion_page(model_name: str):
        overview = await run_in_threadpool(lineage.model_overview, model_name, load_config())
        if overview.champion is None:
            raise lineage.LineageNotFound(f"{model_name} has no champion")
        return RedirectResponse(f"versions/{overview.champion.version}", status_code=307)

    @app.get("/api/models/{model_name}")
    async def model_json(model_name: str) -> JSONResponse:
        overview = await run_in_threadpool(lineage.model_overview, model_name, load_config())
        return JSONResponse(strip_userinfo_deep(overview.to_dict()))

    @app.get("/api/models/{model_name}/versions/{version}")
    async def version_json(model_name: str, version: str) -> JSONResponse:
        chain = await run_in_threadpool(lineage.version_lineage, model_name, version,
                                        load_config())
        return JSONResponse(strip_userinfo_deep(chain.to_dict()))

    @app.get("/models/{model_name}/versions/{version}/card")
    async def model_card(model_name: str, version: str, format: str = "html") -> Response:
        from pipeline_tasks.lineage.cards import read_model_card

        lineage.check_name("model", model_name)
        lineage.check_name("version", version)
        if format not in ("html", "md"):
            raise lineage.LineageNotFound("a model card is served as html or md")
        try:
            body = await run_in_threadpool(read_model_card, model_name, version, load_config(),
                                           format)
        except FileNotFoundError as exc:
            raise lineage.LineageNotFound(str(exc)) from exc
        media = "text/html; charset=utf-8" if format == "html" else "text/markdown; charset=utf-8"
        return Response(body, media_type=media)

    @app.get("/models/{model_name}/versions/{version}/plots/{name}")
    async def plot(model_name: str, version: str, name: str) -> Response:
        config = load_config()
        chain = await run_in_threadpool(lineage.version_lineage, model_name, version, config)
        if name not in (chain.training.get("plots") or []):  # only the run's own plots
            raise lineage.LineageNotFound(f"v{version} has no plot {name!r}")

        def download() -> bytes:
            client = lineage.mlflow_client(config)
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(chain.summary.run_id,
                                                  f"{lineage.PLOTS_DIR}/{name}", tmp)
                return Path(local).read_bytes()

        body = await run_in_threadpool(download)
        return Response(body, media_type=mimetypes.guess_type(name)[0]
                        or "application/octet-stream")

    @app.get("/reports/{kind}/{path:path}")
    async def report(kind: str, path: str) -> Response:
        config = load_config()
        found = reports.resolve_report(kind, path, config)
        body = await run_in_threadpool(reports.read_report, found)
        return Response(body, media_type=found.media_type,
                        headers={"Cache-Control": "private, max-age=60"})

    return app


app = LazyASGIApp(create_app)
