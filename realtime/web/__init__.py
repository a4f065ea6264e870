"""Local web app: upload images and videos, or use the browser's webcam, and get labelled faces back.

Start it with ``python -m realtime.web`` (see ``docs/web.md``). The app itself lives in
:mod:`realtime.web.app`; this package imports nothing heavy so ``--help`` stays fast.
"""

import os

# A second guard under the app's own header check (realtime.sources.decode_image_limited): OpenCV
# reads this once, when cv2 is first imported, and then refuses to decode any image whose header
# says it has more pixels, whatever its format. `python -m realtime.web` imports this package
# before anything imports cv2.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(50_000_000))

# HTTP timeouts (realtime.web.timeouts; --header-timeout/--body-timeout change the first two).
HEADER_TIMEOUT_S = 10.0  # request line and headers
BODY_TIMEOUT_S = 30.0  # request body: this much plus its Content-Length at MIN_BODY_RATE
MIN_BODY_RATE = 16 * 1024  # bytes per second
KEEP_ALIVE_S = 5.0  # an idle kept-alive connection
