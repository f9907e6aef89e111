"""The generation stage component (see component.py and README.md)."""
