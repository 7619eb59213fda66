import sys

from faults.edgectl_kill import main

sys.exit(main())
