"""The command line: an edge that calls the core, never the other way round."""
