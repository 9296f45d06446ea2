"""``python -m authtrail.cli``: the ``authtrail`` command without its script."""

import sys

from authtrail.cli.main import main

sys.exit(main())
