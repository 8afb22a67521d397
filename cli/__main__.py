"""``python -m dmmlkd.cli``: the console script without the script."""

import sys

from dmmlkd.cli.main import main

sys.exit(main())
