"""ganglion: one brain, many neurons. Run LLM work across every machine you own."""

__version__ = "0.1.0"
