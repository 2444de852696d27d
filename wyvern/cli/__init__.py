"""Command line: the `wyvern` console script."""
