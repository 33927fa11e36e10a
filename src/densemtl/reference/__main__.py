"""``python -m densemtl.reference NAME``: print the path of a reference row's JSON file."""

import sys

from densemtl.reference import available, path

if len(sys.argv) != 2:
    sys.exit(f"usage: python -m densemtl.reference NAME   (one of {', '.join(available())})")
print(path(sys.argv[1]))
