"""Draw the module and extension icons and the Sample Data thumbnail (run once; the PNGs are committed).

Usage: python scripts/make_icons.py .   (from the repository root, after Resources/Screenshot01.png exists)
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
import matplotlib

S = 4  # supersampling

def base(size=128):
    W = size * S
    img = Image.new("RGBA", (W, W), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # rounded dark tile
    d.rounded_rectangle([0, 0, W - 1, W - 1], radius=22 * S, fill=(24, 26, 38, 255))
    # head / brain: two hemispheres
    cx, cy = W * 0.5, W * 0.52
    rx, ry = W * 0.36, W * 0.40
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(200, 200, 205, 255))
    d.ellipse([cx - rx * 0.88, cy - ry * 0.9, cx + rx * 0.88, cy + ry * 0.9], fill=(150, 150, 158, 255))
    d.line([cx, cy - ry * 0.9, cx, cy + ry * 0.9], fill=(110, 110, 118, 255), width=3 * S)
    # resection cavity (dark) and the heatmap (inferno) beside it
    kx, ky = cx + W * 0.12, cy + W * 0.05
    d.ellipse([kx - W * 0.07, ky - W * 0.07, kx + W * 0.07, ky + W * 0.07], fill=(35, 35, 40, 255))
    heat = np.zeros((W, W))
    yy, xx = np.mgrid[0:W, 0:W]
    hx, hy = cx + W * 0.02, cy - W * 0.08
    heat = np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (W * 0.085) ** 2)))
    cmap = matplotlib.colormaps["inferno"]
    rgba = (cmap(heat) * 255).astype(np.uint8)
    rgba[..., 3] = np.clip((heat - 0.18) / 0.3, 0, 1) * 235
    img = Image.alpha_composite(img, Image.fromarray(rgba, "RGBA"))
    d = ImageDraw.Draw(img)
    # isodose lines
    r1 = W * 0.2
    d.ellipse([kx - r1, ky - r1 * 0.95, kx + r1, ky + r1 * 0.95], outline=(0, 255, 255, 255), width=3 * S)
    r2 = W * 0.29
    d.ellipse([kx - r2, ky - r2 * 0.95, kx + r2, ky + r2 * 0.95], outline=(80, 255, 80, 255), width=3 * S)
    # keep within tile
    mask = Image.new("L", (W, W), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, W - 1, W - 1], radius=22 * S, fill=255)
    img.putalpha(Image.fromarray(np.minimum(np.array(img)[..., 3], np.array(mask))))
    return img

def finish(img, size):
    return img.resize((size, size), Image.LANCZOS)

def training(size=128):
    img = base(size)
    W = size * S
    d = ImageDraw.Draw(img)
    # a small chart panel in the lower-left: falling loss, rising F1
    x0, y0, x1, y1 = W * 0.04, W * 0.56, W * 0.50, W * 0.96
    d.rounded_rectangle([x0, y0, x1, y1], radius=6 * S, fill=(250, 250, 250, 235), outline=(60, 60, 70, 255), width=2 * S)
    t = np.linspace(0, 1, 40)
    loss = 0.85 - 0.65 * (1 - np.exp(-4 * t))
    f1 = 0.25 + 0.65 * (1 - np.exp(-3.5 * t))
    for curve, colour in ((loss, (220, 60, 40, 255)), (f1, (30, 120, 220, 255))):
        pts = [(x0 + (x1 - x0) * (0.08 + 0.84 * a), y1 - (y1 - y0) * (0.08 + 0.84 * b)) for a, b in zip(t, curve)]
        d.line(pts, fill=colour, width=4 * S, joint="curve")
    return img

if __name__ == "__main__":
    import sys
    root = sys.argv[1]
    finish(base(128), 128).save(f"{root}/RICENet/Resources/Icons/RICENet.png", optimize=True)
    finish(base(128), 128).save(f"{root}/Resources/Icons/RICENet.png", optimize=True)
    finish(training(128), 128).save(f"{root}/RICENetTraining/Resources/Icons/RICENetTraining.png", optimize=True)
    # Sample Data thumbnail (about 260 x 280): the middle of the screenshot.
    shot = Image.open(f"{root}/Resources/Screenshot01.png").convert("RGB")
    w, h = shot.size
    cx, cy = 0.58 * w, 0.60 * h  # around the lesion
    box = (int(cx - 190), int(cy - 205), int(cx + 190), int(cy + 205))
    shot.crop(box).resize((260, 280), Image.LANCZOS).save(f"{root}/RICENet/Resources/Icons/RICENetSample.png", optimize=True)
