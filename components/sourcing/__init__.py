"""The sourcing stage component (see component.py and README.md)."""
