"""`python -m netdissect` (also `torchrun -m netdissect`) runs the command line."""
import sys

from netdissect.cli import main

sys.exit(main())
