"""``python -m longalign.cli`` (what torchrun and the training job run)."""

import sys

from longalign.cli import main

sys.exit(main())
