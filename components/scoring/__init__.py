"""The scoring stage component (see component.py and README.md)."""
