"""`python -m streamalloc` is the `streamalloc` command."""

from streamalloc.cli import main

main()
