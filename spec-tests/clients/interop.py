"""Shared by the Python interop scripts: `ok <step>` reporting and the conversation arguments."""
import argparse
import sys


def check(cond, step, detail=""):
    """Prints `ok step`, or `FAIL step: detail` and exits 1."""
    if not cond:
        print(f"FAIL {step}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {step}", flush=True)


def conversation_args():
    """The arguments every conversation script takes (all required)."""
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--server-name", "--user-a", "--password-a", "--user-b", "--password-b",
                 "--room-version"):
        parser.add_argument(flag, required=True)
    return parser.parse_args()
