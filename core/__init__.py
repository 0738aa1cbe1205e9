"""Visual Dataset Explorer: explore an image collection by concept, teach a classifier by example."""

__version__ = "0.1.0"
