"""The promotion gate component (see component.py and README.md)."""
