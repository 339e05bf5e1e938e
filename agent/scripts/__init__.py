"""Vetted remediation scripts on the till: verify (verify.py), check, ask, back up, run, restore.

:mod:`agent.scripts.runner` is the entry point; it takes an already-verified script folder.
"""
