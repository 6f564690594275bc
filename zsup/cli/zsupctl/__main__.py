"""`python -m zsup.cli.zsupctl`."""

import sys

from zsup.cli.zsupctl.parser import main

sys.exit(main())
