"""``python -m tfpipeline.cli ...``: the same as the ``tfpipeline`` console script."""
import sys

from tfpipeline.cli import main

sys.exit(main())
