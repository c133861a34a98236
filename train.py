#!/usr/bin/env python
"""Train a segmentation model: `python train.py --config configs/teacher/<name>.yaml [key=value ...]`.

Also `torchrun --nproc_per_node=N train.py ...` and `marsedge train ...`; see marsedge/train/cli.py.
"""

import sys

from marsedge.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
