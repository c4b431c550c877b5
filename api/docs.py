"""/docs: the REST API's Swagger UI, served by imapdesk itself.

Its files are vendored in `frontend/static/vendor/swagger-ui/` (`scripts/vendor-swagger-ui.sh`
fetches the npm package swagger-ui-dist by version and checks its integrity), and the script
that starts it is a static file (`frontend/static/docs.js`): the page loads nothing from
elsewhere, so it works on a machine without internet, under the same policy as our own pages
(no inline script, nothing external).
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

DOCS_PATH = "/docs"
SWAGGER_UI = "vendor/swagger-ui"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API</title>
  <link rel="icon" type="image/png" href="{favicon}">
  <link rel="stylesheet" href="{css}">
  <script src="{bundle}" defer></script>
  <script src="{start}" defer></script>
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
</body>
</html>
"""


@router.get(DOCS_PATH, name="docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    def static(path: str) -> str:
        return escape(request.url_for("static", path=path).path)

    openapi_url = request.app.openapi_url or ""
    return HTMLResponse(
        _PAGE.format(
            title=escape(request.app.title),
            favicon=static(f"{SWAGGER_UI}/favicon-32x32.png"),
            css=static(f"{SWAGGER_UI}/swagger-ui.css"),
            bundle=static(f"{SWAGGER_UI}/swagger-ui-bundle.js"),
            start=static("docs.js"),
            openapi=escape(request.scope.get("root_path", "") + openapi_url),
        )
    )
