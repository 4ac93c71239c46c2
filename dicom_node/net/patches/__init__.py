"""pynetdicom speed patches, kept apart and named as such (docs/benchmarks.md).

Each module replaces one piece of pynetdicom's receive or send path with a faster one
that behaves the same on the wire; ``install()`` applies it, once per process."""
