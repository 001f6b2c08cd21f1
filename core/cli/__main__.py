"""``python -m flag_core.cli`` (and ``torchrun -m flag_core.cli``): the flagstack command."""

from . import main

raise SystemExit(main())
