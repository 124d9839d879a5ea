"""``python -m pipeline_tasks``: the CLI (``pipeline_tasks.ops.cli``)."""

import sys

from pipeline_tasks.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
