"""python -m examples.hr_assistant ─► cli."""

import sys

from examples.hr_assistant.cli import main

if __name__ == "__main__":
    sys.exit(main())
