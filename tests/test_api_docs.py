"""/schema works offline: the page and every file it loads come from the router itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from router.api.api_docs import SWAGGER_UI_DIRECTORY
from tests.harness import running_router

# Attributes by which a page makes the browser fetch something.
_FETCHED = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


async def test_schema_pages_load_only_the_routers_own_files(dsn: str) -> None:
    async with running_router(dsn, None, None) as r, httpx.AsyncClient(base_url=r.base_url) as web:
        fetched: set[str] = set()
        for page in ("/schema", "/schema/swagger"):
            resp = await web.get(page)  # no API key: the docs are public, as before
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"].startswith("text/html")
            html = resp.text
            assert "SwaggerUIBundle(" in html
            urls = _FETCHED.findall(html)
            assert len(urls) == 4, urls  # favicon, CSS, bundle, preset
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), url
            # nothing else in the page's markup names another host
            markup = html.split("spec:", 1)[0]
            assert re.search(r"https?://", markup) is None, markup
            fetched.update(urls)
        assert len(fetched) == 4
        for url in sorted(fetched):
            resp = await web.get(url)
            assert resp.status_code == 200, url
            suffix = Path(url).suffix
            assert _TYPES[suffix] in resp.headers["content-type"], (url, resp.headers)
            assert resp.content == (SWAGGER_UI_DIRECTORY / Path(url).name).read_bytes()
        assert (await web.get("/schema/assets/no-such-file.js")).status_code == 404
        # the document itself is where it was
        assert (await web.get("/schema/openapi.json")).json()["info"]["title"] == "delivery-router"
        assert "title: delivery-router" in (await web.get("/schema/openapi.yaml")).text


def test_the_licence_ships_beside_the_files() -> None:
    licence = (SWAGGER_UI_DIRECTORY / "LICENSE").read_text()
    assert "Apache License" in licence
    assert (SWAGGER_UI_DIRECTORY / "swagger-ui-bundle.js.LICENSE.txt").is_file()
