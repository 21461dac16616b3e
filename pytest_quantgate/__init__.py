"""pytest-quantgate: find the smallest quantized GGUF variant that passes your own rubric."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
