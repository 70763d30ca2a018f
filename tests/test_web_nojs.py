"""Everything a person does on the web pages works in a browser with JavaScript turned off.

Technicians' phones and locked-down office browsers may run no script: the status page, the customer
lookup and the staff board (login, acknowledge, estimate) are plain HTML forms. Real headless Chromium
with script execution disabled; fields are typed and buttons clicked through its input pipeline
(DevTools ``Input.*``), so nothing of ours fills a form on the page's behalf.
"""

from __future__ import annotations

from pathlib import Path

from tests.api_support import Env, acked_by
from tests.cdp import Browser
from tests.test_web import serve
from tests.test_web_board import PASSWORD, audit, env  # noqa: F401 - pytest fixture
from tests.web_support import example

PROOF = "data:text/html,<p id=x>static</p><script>x.textContent = 'ran'</script>"


async def scripts_off(chrome: Browser) -> None:
    """The browser really runs no page script (else these tests would prove nothing)."""
    assert (await chrome.open(PROOF)).strip() == "static"


async def test_board_login_acknowledge_and_estimate_without_javascript(env: Env, tmp_path: Path) -> None:  # noqa: F811
    async with Browser(tmp_path / "chromium", scripts=False) as chrome:
        await scripts_off(chrome)
        text = await chrome.open(f"{env.base}/board?lang=en")
        assert "Log in" in text and await chrome.evaluate("location.pathname") == "/board/login"
        await chrome.type("#user", "ana")
        await chrome.type("#password", PASSWORD)
        text = await chrome.click("form.lookup button")
        assert "Open incidents (1)" in text and "ana (operator)" in text
        await chrome.type("#ack-INC-000001", "on my way")
        text = await chrome.click('form[action$="/ack"] button')
        assert "Acknowledged\nana" in text
        await chrome.type("#eta-INC-000001", "2026-11-18T09:06:40-05:00")
        text = await chrome.click('form[action$="/eta"] button')
        assert "2026-11-18 14:06" in text
    assert acked_by(env) == "ana"
    assert [(a["user"], a["action"]) for a in audit(env)] == [("ana", "login"), ("ana", "ack"), ("ana", "eta")]


async def test_status_page_and_lookup_without_javascript(tmp_path: Path) -> None:
    async for site in serve(tmp_path, example()):
        async with Browser(tmp_path / "chromium", scripts=False) as chrome:
            await scripts_off(chrome)
            text = await chrome.open(f"{site.base}/?lang=es")
            assert "Corte de servicio" in text and "Disponibilidad de los últimos 90 días" in text
            await chrome.type("#number", "C-0001")
            await chrome.type("#digits", "0101")
            text = await chrome.click("form.lookup button")
            assert "Su servicio está afectado por un problema conocido." in text and "Corte de servicio" in text
