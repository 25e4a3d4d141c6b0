"""Run `correctsweep sweep` on the head node of a running Ray cluster; the script for `ray submit`.

    ray submit cluster/aws-gpu.yaml cluster/submit_sweep.py -- cluster/sweep-cluster.yaml --set storage=s3://B/p

`ray submit` copies this file to ~/submit_sweep.py on the head and runs `python ~/submit_sweep.py ARGS`
there, from the home directory. The cluster configs sync the repository to ~/correctsweep, so the
script first moves there: a spec path relative to the repository root means the same on the head as
on your machine. It then calls the CLI as `correctsweep sweep ARGS --address auto`, which joins the
cluster that `ray up` started instead of starting a private Ray (pass --address yourself to override).
"""

import os
import sys

from correctsweep.cli import main

PROJECT_DIR = os.path.expanduser(os.environ.get("CORRECTSWEEP_DIR", "~/correctsweep"))


def sweep_argv(args: list[str]) -> list[str]:
    has_address = any(a == "--address" or a.startswith("--address=") for a in args)
    return ["sweep", *args] + ([] if has_address else ["--address", "auto"])


if __name__ == "__main__":
    if os.path.isdir(PROJECT_DIR):
        os.chdir(PROJECT_DIR)
    sys.exit(main(sweep_argv(sys.argv[1:])))
