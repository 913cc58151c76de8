"""``python -m monai_crossd.apps.bundle <command> ...``: MONAI's bundle command line, ending a failed run with one line.

The commands and arguments are those of ``python -m monai.bundle`` (``run``, ``ckpt_export``, ``verify_metadata``...),
which keeps working as before. When a command fails, the full traceback is printed to stderr as usual, then one last
line ``error: <ExceptionType>: <message>`` with the message that names the file or argument (MONAI's
``RuntimeError: Failed to evaluate ConfigExpression`` wrappers skipped, see
:func:`monai_crossd.apps.bundle.error_message`), and the exit status is 1.

Example:
    python -m monai_crossd.apps.bundle run --config_file bundles/crossd_hippocampus_segmentation/configs/inference.json
"""

from __future__ import annotations

import runpy
import sys
import traceback

from monai_crossd.apps.bundle.errors import error_message


def main() -> int:
    """Run ``monai.bundle``'s command line on ``sys.argv``; 1 and a last ``error:`` line on an exception."""
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except Exception as err:  # noqa: BLE001 - reported, with its traceback, and turned into the exit status
        traceback.print_exc()
        sys.stderr.flush()
        print(f"error: {error_message(err)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
