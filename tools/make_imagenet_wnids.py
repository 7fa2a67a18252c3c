"""Write deepsim_cli/resources/imagenet_wnids.txt: the 1000 ImageNet wnids in class-index order.

ImageNet's class indices are the sorted wnids; imagenet-sample-256.tar holds one photo per
class named <wnid>_<name>.jpg, so its sorted names give the list (torchvision ships only the
class names, not the wnids).

    python tools/make_imagenet_wnids.py ../shared/data/imagenet-sample-256.tar
"""

import sys
import tarfile
from pathlib import Path

out = Path(__file__).resolve().parent.parent / "deepsim_cli" / "resources" / "imagenet_wnids.txt"
with tarfile.open(sys.argv[1]) as tf:
    wnids = sorted(Path(m.name).name.split("_")[0] for m in tf if m.isfile())
assert len(wnids) == 1000 and len(set(wnids)) == 1000, len(wnids)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("\n".join(wnids) + "\n")
print(f"{len(wnids)} wnids → {out}")
