"""Offline stand-ins for the base preset's downloads: a random ViT-B/32 CLIP and VGGSound weights.

    python scripts/gpu_fixtures.py OUT_DIR      # OUT_DIR/clip-vit-b32-random/, OUT_DIR/vggsound-random.pth

``transformers.CLIPConfig()``'s defaults are openai/clip-vit-base-patch32's shapes (ViT-B/32,
224 px, 512-wide text tower), saved with ``save_pretrained`` so that ``--clip DIR`` loads it as a
hub checkpoint would be; the ResNet-18 audio network is randomly initialised. The weights are
random: use them to measure speed, memory and the code paths (``torchrun``, DDP, compact
batches), not retrieval.
"""
import sys
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from eclipse_lite.audio_encoders import ResNet18Audio


def main(out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(str(out_dir / "clip-vit-b32-random"))
    torch.save(ResNet18Audio().state_dict(), out_dir / "vggsound-random.pth")
    print(f"wrote {out_dir / 'clip-vit-b32-random'} and {out_dir / 'vggsound-random.pth'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
