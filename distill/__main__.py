import sys

from .accelerated import main_or_help
from .cli import main

sys.exit(main_or_help(main))
