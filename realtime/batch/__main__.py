"""``python -m realtime.batch`` (= ``face-gender-batch``)."""

import sys

from .cli import main

if __name__ == "__main__":  # (a spawned worker imports this module as __mp_main__: it must not run the batch)
    sys.exit(main())
