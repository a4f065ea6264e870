"""Local web app: upload images and videos, or use the browser's webcam, and get labelled faces back.

Start it with ``python -m realtime.web`` (see ``docs/web.md``). The app itself lives in
:mod:`realtime.web.app`; this package imports nothing heavy so ``--help`` stays fast.
"""
