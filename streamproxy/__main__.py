import sys

from streamproxy.cli import main

sys.exit(main())
