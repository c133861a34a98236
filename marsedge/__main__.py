import sys

from marsedge.cli import main

sys.exit(main())
