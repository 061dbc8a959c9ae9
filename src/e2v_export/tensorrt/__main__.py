"""python -m e2v_export.tensorrt build|parity (e2v_export.tensorrt.cli)."""

import sys

from e2v_export.tensorrt.cli import main

sys.exit(main())
