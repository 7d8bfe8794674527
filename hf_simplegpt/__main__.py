"""`python -m hf_simplegpt <job> ...` is the `hf-simplegpt` command."""

import sys

from .cli import main

sys.exit(main())
