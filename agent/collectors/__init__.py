"""Diagnostics collectors: each a pure ``parse_<thing>`` plus a thin I/O part with its own timeout.

Collectors report success or a typed failure; one broken collector never spoils the report.
"""
