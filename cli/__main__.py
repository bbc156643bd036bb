"""``python -m singularity_ops.cli``: the same as the ``singularity-ops`` command."""

import sys

from singularity_ops.cli.main import main

sys.exit(main())
