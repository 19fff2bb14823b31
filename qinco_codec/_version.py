"""The library version, recorded in every model file and container."""
__version__ = "0.1.0"
