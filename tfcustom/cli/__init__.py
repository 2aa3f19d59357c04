"""Command-line entry points (the only place that reads absl flags)."""

import sys

from absl import flags


def parse_flags(argv):
    """absl's flag parsing for ``app.run(main, flags_parser=parse_flags)``, except
    that a bad flag is one ``error:`` line and exit code 2, like every other
    config error (absl alone prints a usage dump and exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}. See --helpfull for every flag and its allowed values.", file=sys.stderr)
        sys.exit(2)
