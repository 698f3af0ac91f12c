"""Implementations behind the `streamalloc` CLI commands; cli.py only parses and wires."""
