#!/usr/bin/env python
"""Distil a frozen teacher into a student: `python distill.py --config configs/student/<name>.yaml`.

Also `torchrun --nproc_per_node=N distill.py ...` and `marsedge distill ...`; see marsedge/distill/cli.py.
"""

import sys

from marsedge.distill.cli import main

if __name__ == "__main__":
    sys.exit(main())
