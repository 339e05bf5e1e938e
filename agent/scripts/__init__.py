"""Vetted remediation scripts on the till: verify (verify.py), check, ask, back up, run, restore.

:mod:`agent.scripts.service` serves a relay's request: it verifies the script against the signed
repository (:mod:`agent.scripts.verify`), then :mod:`agent.scripts.runner` runs it.
"""
