"""`python -m tiny_audio` runs the `tiny-audio` command."""

from .cli import main

main()
