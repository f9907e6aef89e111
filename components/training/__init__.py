"""The training stage component (see component.py and README.md)."""
