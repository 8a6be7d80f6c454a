"""The API documentation pages under /schema, served whole by the router.

Litestar's pages load their JavaScript and CSS from CDNs, so they are blank with no internet
or behind a proxy that blocks them. Swagger UI's files ship in this package
(`static/swagger-ui/`, with their licence) and are served from `ASSETS_PATH`, so `/schema`
(and `/schema/swagger`) work wherever the router's own port is reachable; the OpenAPI
document stays at `/schema/openapi.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

ASSETS_PATH: Final = "/schema/assets"
SWAGGER_UI_DIRECTORY: Final = Path(__file__).parent / "static" / "swagger-ui"
# The version of the files in SWAGGER_UI_DIRECTORY (swagger-ui-dist).
SWAGGER_UI_VERSION: Final = "5.35.0"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at /schema and /schema/swagger, with every asset from `ASSETS_PATH`; the
    document as YAML at /schema/openapi.yaml as before (the JSON one Litestar adds)."""
    return [
        SwaggerRenderPlugin(
            version=SWAGGER_UI_VERSION,
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            path=["/", "/swagger"],
        ),
        YamlRenderPlugin(),
    ]


def assets_router() -> Router:
    """The files the documentation pages load (public, like the pages; not in the schema)."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[SWAGGER_UI_DIRECTORY],
        include_in_schema=False,
        name="api-docs-assets",
    )
