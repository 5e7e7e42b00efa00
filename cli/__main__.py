"""``python -m cli ...`` is the ``mel`` command."""
import sys

from cli.main import main

sys.exit(main())
