"""``python -m fastnn train`` is the same as ``fastnn train``."""
import sys

from .cli import main

sys.exit(main())
