"""The trainer CLI's ``main`` on several argument lists in one process, for tests/test_cli.py's bad-config
cases: one Python and TensorFlow start for all of them instead of one per case (not a test module).

    python tests/cli_config_errors.py '[["--model=x", ...], ...]'   ->  RESULT [[exit code, stderr], ...]
"""

import contextlib
import io
import json
import sys

from absl import flags

import tfcustom.cli.train as cli
from tfcustom.cli import parse_flags


def run_cases(cases):
    results = []
    for argv in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                parse_flags(["train.py", *argv], groups=cli.HELP_GROUPS, doc=cli.USAGE)  # as cli.run parses them
                code = cli.main(["train.py"])
            except SystemExit as e:
                code = e.code
            finally:
                flags.FLAGS.unparse_flags()
        results.append([code, err.getvalue()])
    return results


if __name__ == "__main__":
    print("RESULT " + json.dumps(run_cases(json.loads(sys.argv[1]))))
