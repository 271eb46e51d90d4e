"""Render a robustlaw HTML report in headless Chromium to a PNG, to check the page as a user sees it.

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1280] [--height 2400]

Needs a Chromium binary (Debian: ``apt-get install chromium``); not run in CI. The page is loaded
from the file system, so no server is involved.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        sys.exit("screenshot_report: no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={out.absolute()}", page.absolute().as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"{out}: {width} x {height} screenshot of {page}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    screenshot(args.page, args.out, args.width, args.height)


if __name__ == "__main__":
    main()
