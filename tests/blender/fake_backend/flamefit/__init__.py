"""A stand-in for the FlameFit backend CLI in the add-on's tests (no torch): it speaks the
INTERFACE.md command line and progress stream, and writes synthetic bundles."""

__version__ = "0.0.0-fake"
