"""Vetted remediation scripts on the till: verification (verify.py) and running them."""
