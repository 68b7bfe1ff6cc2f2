"""Profile a sentence-transformers embedding model and publish the evidence as a site."""

__version__ = "0.1.0"
