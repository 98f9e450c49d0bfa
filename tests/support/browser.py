"""Headless Chromium (Debian's chromium + chromium-driver) driven by selenium, inside a
lab namespace.

Network namespaces are per thread, so every WebDriver call runs on a thread that
entered the namespace (``tests.support.netns_thread.in_netns``): chromedriver, started from
such a thread, and the browser it starts live in the namespace, and so do the
sockets selenium opens to chromedriver. The browser reaches only the lab's
addresses; nothing it tries to fetch from elsewhere can leave the namespace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lab.testing import require_tool
from tests.support.netns_thread import in_netns

T = TypeVar("T")

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-features=Translate,MediaRouter,OptimizationHints",
         "--hide-scrollbars", "--force-device-scale-factor=1")


class Browser:
    def __init__(self, netns: str, profile: Path, width: int = 1400, height: int = 900,
                 dark: bool = False, phone: bool = False):
        chromium, driver = require_tool("chromium"), require_tool("chromedriver")
        self.netns = netns
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={profile}")
        opts.add_argument(f"--window-size={width},{height}")
        service = Service(executable_path=driver, log_output=str(profile) + ".driver.log")
        self.driver = self.call(lambda: webdriver.Chrome(options=opts, service=service), 90)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        if phone:  # a phone's viewport (DevTools emulation: no desktop minimum window size)
            self.cdp("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
        if dark:
            self.cdp("Emulation.setEmulatedMedia",
                     {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})

    def cdp(self, cmd: str, args: dict[str, Any]) -> Any:
        return self.call(lambda: self.driver.execute_cdp_cmd(cmd, args))

    def call(self, fn: Callable[[], T], timeout: float = 60) -> T:
        return in_netns(self.netns, fn, timeout)

    def get(self, url: str) -> None:
        self.call(lambda: self.driver.get(url))

    def js(self, script: str, *args: Any) -> Any:
        return self.call(lambda: self.driver.execute_script(script, *args))

    def wait_js(self, script: str, what: str, timeout: float = 15, *args: Any) -> Any:
        """Poll a script until it returns something truthy (bounded); returns it."""
        def loop() -> Any:
            deadline = time.monotonic() + timeout
            last = None
            while time.monotonic() < deadline:
                last = self.driver.execute_script(script, *args)
                if last:
                    return last
                time.sleep(0.05)
            raise AssertionError(f"browser: {what} not seen within {timeout}s (last: {last!r})")
        return self.call(loop, timeout + 30)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = self.call(lambda: self.driver.save_screenshot(str(path)))
        assert ok, f"screenshot {path} failed"
        return path

    def element(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css))

    def select(self, css: str, value: str) -> None:
        """Choose an option as a user would (the page sees a change event)."""
        from selenium.webdriver.support.ui import Select

        el = self.element(css)
        self.call(lambda: Select(el).select_by_value(value))

    def click(self, css: str) -> None:
        el = self.element(css)
        self.call(lambda: el.click())

    def set_size(self, width: int, height: int) -> None:
        self.call(lambda: self.driver.set_window_size(width, height))

    def quit(self) -> None:
        self.call(lambda: self.driver.quit(), 60)
