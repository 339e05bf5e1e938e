"""Real headless Chromium (Debian's ``chromium``) driven over its DevTools protocol: navigate,
evaluate, wait for a condition in the page, screenshot, and collect console errors and CSP
violations. The web console's browser tests use it (tests/e2e/test_web_console_browser.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from aiohttp import ClientSession
from websockets.asyncio.client import ClientConnection, connect

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CHROMIUM", "Browser", "start_browser"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One page of a headless Chromium."""

    def __init__(self, process: subprocess.Popen[bytes], ws: ClientConnection) -> None:
        self.process = process
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            message = json.loads(frame)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self.events.append(message)
                self._event.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def wait_event(self, method: str, after: int = 0, timeout: float = 30) -> dict[str, Any]:
        """The first event ``method`` from index ``after`` of :attr:`events` on."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event["method"] == method:
                        return event
                self._event.clear()
                await self._event.wait()

    async def goto(self, url: str) -> None:
        mark = len(self.events)
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired", after=mark)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> None:
        """Until ``expression`` is true in the page: a promise in the page that resolves when a
        mutation makes it so (no polling from here)."""
        script = f"""new Promise((resolve) => {{
            const ok = () => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }};
            if (ok()) {{ resolve(true); return; }}
            const seen = new MutationObserver(() => {{
                if (ok()) {{ seen.disconnect(); resolve(true); }}
            }});
            seen.observe(document, {{
                subtree: true, childList: true, characterData: true, attributes: true
            }});
        }})"""
        async with asyncio.timeout(timeout):
            await self.evaluate(script)

    async def size(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            metrics = await self.call("Page.getLayoutMetrics")
            content = metrics["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": content["width"],
                "height": min(content["height"], 4000),
                "scale": 1,
            }
        shot = await self.call("Page.captureScreenshot", **params)
        data = base64.b64decode(shot["data"])
        await asyncio.to_thread(_write, path, data)
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and CSP violations the page reported."""
        found = []
        for event in self.events:
            if event["method"] == "Log.entryAdded":
                entry = event["params"]["entry"]
                if entry["level"] == "error" or entry.get("source") == "security":
                    found.append(f"{entry.get('source')}: {entry.get('text')}")
            elif event["method"] == "Runtime.exceptionThrown":
                found.append(str(event["params"]["exceptionDetails"].get("text")))
            elif (
                event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error"
            ):
                found.append(str(event["params"]["args"]))
        return found

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()
        self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        if self.process.stderr is not None:  # the drain thread has read to its end
            self.process.stderr.close()


async def start_browser(profile: Path) -> Browser:
    """A headless Chromium with its own profile folder, one blank page open."""
    if CHROMIUM is None:  # a failure, not a skip: .ci/run installs Debian's chromium
        raise RuntimeError("no chromium on PATH: apt-get install chromium")
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: ASYNC220 - a browser that outlives this call
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    # Chromium says where DevTools listens on stderr: "DevTools listening on ws://…"
    async with asyncio.timeout(30):
        while True:
            line = await asyncio.to_thread(process.stderr.readline)
            if not line:
                raise RuntimeError("chromium exited before DevTools listened")
            text = line.decode(errors="replace")
            if "DevTools listening on" in text:
                browser_url = text.split("DevTools listening on", 1)[1].strip()
                break
    # keep draining stderr so Chromium never blocks on a full pipe
    asyncio.get_running_loop().run_in_executor(None, _drain, process)
    port = browser_url.split("//", 1)[1].split("/", 1)[0]
    async with ClientSession() as http, http.get(f"http://{port}/json/list") as r:
        targets = await r.json(content_type=None)
    page = next(t for t in targets if t.get("type") == "page")
    ws = await connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
    browser = Browser(process, ws)
    for domain in ("Page", "Runtime", "Log"):
        await browser.call(f"{domain}.enable")
    return browser


def _drain(process: subprocess.Popen[bytes]) -> None:
    assert process.stderr is not None
    for _ in iter(process.stderr.readline, b""):
        pass


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
