#!/usr/bin/env python3
"""Make training/mask_templates/ from a MaskTheFace checkout's masks/ folder (or a copy of it).

    python scripts/downscale_mask_templates.py SRC_DIR

SRC_DIR holds ``masks.cfg``, ``templates/*.png`` and ``LICENSE`` (MaskTheFace, MIT, Aqeel Anwar;
github.com/aqeelanwar/MaskTheFace). The frontal templates (the ones training uses) are shrunk so
their longer side is at most MAX_SIDE px, their anchor points scaled with them, and written with
the licence beside them. Face crops are 128-192 px, so nothing visible is lost.
"""

from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

import cv2

MAX_SIDE = 256
OUT = Path(__file__).resolve().parent.parent / "training" / "mask_templates"


def main(src: Path) -> int:
    cfg = configparser.ConfigParser()
    cfg.read(src / "masks.cfg")
    (OUT / "templates").mkdir(parents=True, exist_ok=True)
    lines = ["; MaskTheFace mask templates (MIT, Copyright (c) 2020 Aqeel Anwar), frontal ones only,",
             f"; downscaled to at most {MAX_SIDE} px by scripts/downscale_mask_templates.py; anchors scaled.", ""]
    for name in cfg.sections():
        sec = cfg[name]
        if "template" not in sec or name.endswith(("_left", "_right")):
            continue
        image = cv2.imread(str(src / "templates" / Path(sec["template"]).name), cv2.IMREAD_UNCHANGED)
        scale = min(1.0, MAX_SIDE / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out_name = f"{name}.png"
        cv2.imwrite(str(OUT / "templates" / out_name), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        lines += [f"[{name}]", f"template:   templates/{out_name}"]
        for k in "abcdef":
            x, y = (float(v) for v in sec[f"mask_{k}"].split(","))
            lines.append(f"mask_{k}:     {x * scale:.1f}, {y * scale:.1f}")
        lines.append("")
    (OUT / "masks.cfg").write_text("\n".join(lines))
    shutil.copy(src / "LICENSE", OUT / "LICENSE")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
