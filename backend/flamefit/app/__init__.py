"""The application layer: what the commands do, built from the layers below (session
set-up, photo listing, the worker pool, fit, batch, texture-space build). `cli.py` only
parses arguments and calls these; nothing below imports this package."""
