"""Real client apps on Menshen; each is a package run as ``python -m examples.<name>``."""
