"""``python -m tests.faults``: see :mod:`tests.faults.runner`."""

import sys

from tests.faults.runner import main

sys.exit(main())
