"""Drive `cim view`'s own page in headless Chromium through the DevTools protocol (no test page, no page hooks):
start the server on a folder, open the page, evaluate script, click, take screenshots, collect console errors."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from cim.viewer import make_server

WIDTH, HEIGHT = 800, 600
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--mute-audio",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader", f"--window-size={WIDTH},{HEIGHT}",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


class Page:
    """One Chromium tab over the DevTools websocket; ``errors`` collects console errors and uncaught exceptions."""

    def __init__(self, ws) -> None:  # noqa: ANN001
        self.ws = ws
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: object) -> dict:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == call:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")

    def eval(self, expression: str) -> object:
        """Value of a JavaScript expression (promises awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return res["result"].get("value")

    def screenshot(self) -> np.ndarray:
        import cv2

        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def click(self, x: float, y: float) -> None:
        """A left click with the mouse at window pixel (x, y), as a user makes it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left" if kind != "mouseMoved"
                      else "none", clickCount=1 if kind != "mouseMoved" else 0)
            time.sleep(0.05)

    def settle(self) -> np.ndarray:
        """Screenshot after every shown tileset has loaded what the view needs (two frames later)."""
        self.eval("cim.idle()")
        self.eval("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return self.screenshot()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client not installed (pip install -e '.[test]')")
    return found


@contextmanager
def open_view(folder: Path, profile: Path) -> Iterator[Page]:
    """`cim view FOLDER` (its server, on a free port) open in headless Chromium; the page once cim.ready."""
    import websocket

    browser = chromium()
    server = make_server(folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", server.url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None, "Chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        target = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=240, suppress_origin=True)
        page = Page(ws)
        while page.eval("typeof window.cim === 'object' && !!window.cim.ready") is not True:
            time.sleep(0.1)
        page.summary = page.eval("cim.ready")
        yield page
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        server.server_close()


def changed_pixels(a: np.ndarray, b: np.ndarray, threshold: int = 24) -> int:
    """Pixels whose colour differs by more than ``threshold`` in some channel."""
    return int(np.count_nonzero(np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > threshold))


def toggle_layers(page: Page) -> dict[str, int]:
    """For each layer: pixels that change when its checkbox is clicked off (then back on)."""
    base = page.settle()
    changes = {}
    for layer in page.eval("Object.keys(cim.layers)"):
        box = f"document.querySelector('input[data-layer=\"{layer}\"]')"
        page.eval(f"{box}.click()")
        assert page.eval(f"cim.layers['{layer}'].show") is False
        changes[layer] = changed_pixels(base, page.settle())
        page.eval(f"{box}.click()")
    return changes
