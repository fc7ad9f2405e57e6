"""``python -m int4ref.bench {cpu,widgets,gpu} [options]``: see :mod:`int4ref.bench`."""
import sys

from . import main

sys.exit(main())
