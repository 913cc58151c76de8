"""``python -m monai_crossd.evaluate``: the command of 0.1, now ``python -m monai_crossd.apps.transfer``."""

import warnings

from monai_crossd.apps.transfer.__main__ import main

if __name__ == "__main__":
    warnings.warn("`python -m monai_crossd.evaluate` moved to `python -m monai_crossd.apps.transfer`.", FutureWarning,
                  stacklevel=1)
    raise SystemExit(main())
