import sys

from deepinfo.cli import main

sys.exit(main())
