"""`python -m wyvern.cli`: the `wyvern` command without the console script installed."""

from wyvern.cli.main import run

run()
