"""docs/api.md lists exactly the routes the relay's application serves: a route added without a
row, or a row left after its route went, fails here; and every error class it may answer with."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from posassist.protocol import PosAssistError
from posassist.protocol.errors import AuthenticationError
from posassist.relay import errors
from posassist.relay.app import create_app
from posassist.relay.config import RelayConfig
from posassist.relay.routing import OfflineError

DOC = Path(__file__).parents[2] / "docs" / "api.md"
_ROW = re.compile(r"^\| (GET|POST|PATCH|DELETE|PUT) \| `([^`]+)` \|", re.MULTILINE)


def _app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    config = RelayConfig.load(tmp_path / "relay")
    (config.scripts_dir / "metadata").mkdir(parents=True)  # a published repository's routes too
    (config.scripts_dir / "targets").mkdir(parents=True)
    app = create_app(config)
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        if isinstance(route.resource, web.StaticResource):
            path += "/…"
        routes.add((route.method, path))
    return routes


def test_every_route_is_in_docs_api_md_and_every_row_is_a_route(tmp_path: Path) -> None:
    documented = {(method, path) for method, path in _ROW.findall(DOC.read_text("utf-8"))}
    served = _app_routes(tmp_path)
    assert served - documented == set(), "routes missing from docs/api.md"
    assert documented - served == set(), "rows in docs/api.md the relay does not serve"


_ERROR_ROW = re.compile(r"^\| (\d{3}) \| `(\w+)` \|", re.MULTILINE)


def test_every_error_class_is_in_docs_api_md_with_its_status() -> None:
    """A class added to relay/errors.py (or a name to ``HTTP_ERRORS``) without a row in the
    error table, or a row whose status is not the class's, fails here."""
    documented = {name: int(status) for status, name in _ERROR_ROW.findall(DOC.read_text("utf-8"))}
    classes = {
        name: value.http_status
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, PosAssistError)
        and value.__module__ == errors.__name__
    }
    assert "ShortPassword" in classes  # the module was read
    expected = {
        **classes,
        **{name: status for status, (name, *_) in errors.HTTP_ERRORS.items()},
        "AuthenticationError": AuthenticationError.http_status,
        "OfflineError": OfflineError.http_status,
    }
    assert {n: s for n, s in expected.items() if documented.get(n) != s} == {}
