"""An alert carries bare finding codes; the device page gives them words and a fixing script that
runs on the device's own platform (from its ``os`` fact), never the other platform's."""

from __future__ import annotations

from posassist.relay.scripts_repo import device_platform
from posassist.relay.web.pages import finding_rows


def test_an_alerts_codes_get_the_script_of_the_devices_platform() -> None:
    alert = [{"code": "pos.not_running"}, {"code": "printer.usb_wedged"}]
    windows = {r["code"]: r["script"] for r in finding_rows(alert, "en", "windows")}
    assert windows == {"pos.not_running": "", "printer.usb_wedged": "reset-usb-serial-windows"}
    linux = {r["code"]: r["script"] for r in finding_rows(alert, "zh", "linux")}
    assert linux == {
        "pos.not_running": "restart-pos-service",
        "printer.usb_wedged": "reset-usb-serial",
    }
    unknown = {r["code"]: r["script"] for r in finding_rows(alert, "en")}
    assert unknown == linux  # an agent that never said: the advised script, as before


def test_the_platform_comes_from_the_os_fact_and_garbage_is_unknown() -> None:
    assert device_platform({"os": "Windows"}) == "windows"
    assert device_platform({"os": "Linux"}) == "linux"
    assert device_platform({"os": ""}) == ""
    assert device_platform({"os": ["Windows"]}) == ""
    assert device_platform({}) == ""
    assert device_platform(None) == ""
