"""The runtime: the worker loop, the commit protocol and shutdown."""
