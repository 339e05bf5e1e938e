"""The client side of posassist's wire, shared by the store agent and the technician's console.

Python 3.8-compatible (it runs on Windows 7 tills): the one websocket connection driver, the one
pinned-TLS HTTP helper and the relay's TLS pin check. Imports nothing from ``agent`` or ``console``.
"""
