"""The packing stage component (see component.py and README.md)."""
