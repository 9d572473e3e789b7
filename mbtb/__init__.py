"""The top floor of the house: `mbtb`, the one command line that dispatches to distill, bench and serve below it."""
