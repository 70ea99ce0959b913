import sys

from distill.cli import main
from distill.startup import exit_now

code = main()
if len(sys.argv) > 1 and sys.argv[1] == "run":
    exit_now(code)  # the job's files are all written and closed: skip the interpreter's teardown
sys.exit(code)
