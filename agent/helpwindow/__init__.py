"""The merchant's side of the agent: the local link to the desktop session, the help service that
forwards the window's requests to the relay, the view-model, the Tk window and its ``--text`` twin.

The service imports only :mod:`.link` and :mod:`.service` (stdlib + protocol); the window side
(:mod:`.view`, :mod:`.text`, :mod:`.window`) is imported by ``posassist-agent help`` alone, so the
agent's idle memory does not grow (docs/helpwindow.md).
"""
