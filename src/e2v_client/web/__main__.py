"""`python -m e2v_client.web`: e2v-web, as the console script starts it (the browser tests start it so)."""

import sys

from e2v_client.web.cli import main

sys.exit(main())
