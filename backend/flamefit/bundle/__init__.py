"""Result bundles (INTERFACE.md section 3): writer, reader/validator, pictures."""

from .reader import read_result, validate_bundle
from .writer import check_output, write_bundle

__all__ = ["check_output", "read_result", "validate_bundle", "write_bundle"]
