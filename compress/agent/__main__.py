import sys

from compress.agent.job import main

sys.exit(main())
