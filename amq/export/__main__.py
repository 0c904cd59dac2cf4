"""`python -m amq.export`: the command line lives in amq.cli.export."""

import runpy

runpy.run_module("amq.cli.export", run_name="__main__")
