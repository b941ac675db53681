"""Small labeled image sets for the benchmarks, built from Debian packages only.

Every set is made from files that a Debian 12 (bookworm) package installs; nothing is
downloaded at run time.  ``build(name, root)`` re-encodes the images (RGB, longer side at
most 256 px, aspect kept; transparent cut-outs are laid on a white background) into
``root/train/<class>/`` and ``root/test/<class>/`` with a stratified, seeded split.
``install_commands()`` gives the apt-get lines.  Standard library + numpy + Pillow only.

Install (all four sets, about 250 MB download, 345 MB on disk, no dependencies pulled in)::

    apt-get update
    apt-get install -y --no-install-recommends gcompris-qt-data tuxpaint-stamps-default \
        qabcs-data fonts-noto-color-emoji

Without root, ``apt-get download PKG && dpkg -x PKG_*.deb DIR`` and setting
``EDGETL_DEBIAN_ROOT=DIR`` works too (every path below is looked up under that prefix).

The sets
--------
``gcompris_photos`` -- full-frame photographs (real scenes with real backgrounds).
    Package ``gcompris-qt-data`` 3.1 (44 MB download, 75 MB installed; GPL-3+ for the
    program, every image under its own free licence listed in
    /usr/share/doc/gcompris-qt-data/copyright: mostly CC-BY-SA / CC-BY / public domain,
    from Wikimedia Commons).  The images sit inside Qt resource bundles
    (/usr/share/gcompris-qt/rcc/*.rcc) as WebP; a small pure-Python .rcc reader (below)
    takes them out.  Classes come from the folders of the "categorization" and "erase"
    activities: fish (underwater photos, 28), hand_tools (hammers, pliers, scissors,
    screwdrivers, tape measures, multimeters..., 39), monuments (Eiffel tower, Taj Mahal,
    Colosseum..., 27), windmills (14 old windmills + 1 wind turbine, 15), animals (mixed wild
    and farm animals in their habitat from "erase", 33).  142 images.

``tuxpaint_stamps`` -- photographs of single objects cut out from their background
    (transparent PNG; laid on white here).  Package ``tuxpaint-stamps-default``
    2022.06.04 (161 MB download, 218 MB installed; GPL-2).  Classes are stamp folders under
    /usr/share/tuxpaint/stamps, without the ``cartoon`` and ``toys`` sub-folders and without
    the SVG drawings: birds (animals/birds, 35), fruit (food/fruit, 26), vegetables
    (food/vegetables, 18), flowers (plants/flowers, 24), hoofed_mammals
    (animals/mammals/{bovines,deer,equines,camel}, 26), sea_life (animals/fish,
    animals/mammals/aquatic, animals/shellfish, 18).  147 images.

``qabcs_photos`` -- cut-out photographs (transparent PNG; laid on white here), hand-picked.
    Package ``qabcs-data`` 1.0.2 (34 MB download, 40 MB installed; GPL-3+, a few files
    CC0 / MIT / public domain, see /usr/share/doc/qabcs-data/copyright).  The ABC game mixes
    photos and drawings in /usr/share/qabcs/abcs/all/pics/{animals,food,instrument}; the
    lists below keep only the files that were checked by eye to be photographs (or
    photo-real), so that class is never confounded with drawing style: mammals (21),
    instruments (36), produce (raw fruit, vegetables, nuts, spices, 20), dishes (cooked or
    prepared food, 22).  99 images.

``emoji_icons`` (icons, not photos) -- colour pictograms of the Noto Color Emoji font.
    Package ``fonts-noto-color-emoji`` 2.042 (10 MB installed; SIL OFL-1.1 for the font,
    Apache-2.0 for the images/tools).  Each emoji is drawn with Pillow at the font's native
    bitmap size (109 px) and saved as a 128x128 PNG on white.  Classes are Unicode emoji
    subgroups (single code point emoji only, in emoji-test.txt order, first 30 kept):
    mammals (30), birds (20), bugs (16), fruit (19), vegetables (17), vehicles (30),
    sports (27).  159 icons.

Split: per class, the sorted file list is shuffled with a generator seeded by (seed, class)
and ``round(n * test_fraction)`` images (clamped so that each side has at least 5) go to
test.  The same (name, seed, test_fraction) gives byte-identical folders.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import zlib
from typing import Callable, Dict, List, Tuple

from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 256
MIN_PER_SIDE = 5

AVAILABLE: Dict[str, str] = {
    "gcompris_photos": "5 classes of full-frame real photos (fish, hand_tools, monuments, "
    "windmills, animals), 142 images; Debian gcompris-qt-data (CC-BY-SA/CC-BY/PD images)",
    "tuxpaint_stamps": "6 classes of cut-out real photos (birds, fruit, vegetables, flowers, "
    "hoofed_mammals, sea_life), 147 images; Debian tuxpaint-stamps-default (GPL-2)",
    "qabcs_photos": "4 classes of cut-out real photos (mammals, instruments, produce, dishes), "
    "99 images; Debian qabcs-data (GPL-3+)",
    "emoji_icons": "7 classes of colour icons (mammals, birds, bugs, fruit, vegetables, "
    "vehicles, sports), 159 icons; Debian fonts-noto-color-emoji (OFL-1.1)",
}

_PACKAGES = {
    "gcompris_photos": "gcompris-qt-data",
    "tuxpaint_stamps": "tuxpaint-stamps-default",
    "qabcs_photos": "qabcs-data",
    "emoji_icons": "fonts-noto-color-emoji",
}


def install_commands() -> List[str]:
    """The shell commands (as root) that install the sources of every set."""
    pkgs = " ".join(_PACKAGES[n] for n in AVAILABLE)
    return ["apt-get update", f"apt-get install -y --no-install-recommends {pkgs}"]


def _path(p: str) -> str:
    prefix = os.environ.get("EDGETL_DEBIAN_ROOT", "/")
    return os.path.join(prefix, p.lstrip("/"))


def _missing(name: str, what: str) -> RuntimeError:
    pkg = _PACKAGES[name]
    return RuntimeError(
        f"photo set {name!r} needs the Debian package {pkg} ({what} not found); install it "
        f"with: apt-get update && apt-get install -y --no-install-recommends {pkg}"
    )


# A source item: (stable file stem, function returning a PIL image).
Item = Tuple[str, Callable[[], Image.Image]]


def _file_item(path: str) -> Item:
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem, lambda: Image.open(path)


# ----------------------------------------------------------------------------- gcompris
def _read_rcc(path: str) -> Dict[str, Tuple[int, bytes]]:
    """Files of a Qt resource bundle (.rcc, format 1-3): {path: (flags, raw bytes)}."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt .rcc file")
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 22 if ver >= 2 else 14

    def name(off: int) -> str:
        (ln,) = struct.unpack(">H", b[names + off : names + off + 2])
        return b[names + off + 6 : names + off + 6 + 2 * ln].decode("utf-16-be")

    out: Dict[str, Tuple[int, bytes]] = {}
    stack = [(0, "")]
    while stack:
        idx, prefix = stack.pop()
        o = tree + idx * node
        noff, flags = struct.unpack(">IH", b[o : o + 6])
        nm = name(noff) if idx else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", b[o + 6 : o + 14])
            stack.extend((first + c, prefix + nm + "/") for c in range(count))
        else:
            (doff,) = struct.unpack(">I", b[o + 10 : o + 14])
            p = data + doff
            (ln,) = struct.unpack(">I", b[p : p + 4])
            out[prefix + nm] = (flags, b[p + 4 : p + 4 + ln])
    return out


def _rcc_payload(key: str, flags: int, raw: bytes) -> bytes:
    if flags & 1:  # zlib, preceded by the 4-byte uncompressed size
        return zlib.decompress(raw[4:])
    if flags & 4:
        raise RuntimeError(f"{key}: zstd-compressed .rcc entries are not supported")
    return raw


_GCOMPRIS = {
    # class: (activity .rcc, folder inside it, file-name prefix or "")
    "fish": ("categorization", "categorization/resource/images/fishes", ""),
    "hand_tools": ("categorization", "categorization/resource/images/tools", ""),
    "monuments": ("categorization", "categorization/resource/images/monuments", ""),
    "windmills": ("categorization", "categorization/resource/images/renewable", "windmill"),
    "animals": ("erase", "erase/resource", ""),
}


def _gcompris() -> Dict[str, List[Item]]:
    rcc_dir = _path("/usr/share/gcompris-qt/rcc")
    bundles: Dict[str, Dict[str, Tuple[int, bytes]]] = {}
    classes: Dict[str, List[Item]] = {}
    for cls, (bundle, folder, prefix) in _GCOMPRIS.items():
        if bundle not in bundles:
            f = os.path.join(rcc_dir, bundle + ".rcc")
            if not os.path.isfile(f):
                raise _missing("gcompris_photos", f)
            bundles[bundle] = _read_rcc(f)
        items: List[Item] = []
        want = "/gcompris/src/activities/" + folder + "/"
        for key, (flags, raw) in bundles[bundle].items():
            base = key[len(want) :]
            if not key.startswith(want) or "/" in base or not base.startswith(prefix):
                continue
            if not base.lower().endswith((".webp", ".jpg", ".jpeg", ".png")):
                continue

            def load(key=key, flags=flags, raw=raw) -> Image.Image:
                return Image.open(io.BytesIO(_rcc_payload(key, flags, raw)))

            items.append((os.path.splitext(base)[0], load))
        classes[cls] = items
    return classes


# ----------------------------------------------------------------------------- tuxpaint
_TUXPAINT = {
    "birds": ["animals/birds"],
    "fruit": ["food/fruit"],
    "vegetables": ["food/vegetables"],
    "flowers": ["plants/flowers"],
    "hoofed_mammals": [
        "animals/mammals/bovines",
        "animals/mammals/deer",
        "animals/mammals/equines",
        "animals/mammals/camel",
    ],
    "sea_life": ["animals/fish", "animals/mammals/aquatic", "animals/shellfish"],
}


def _tuxpaint() -> Dict[str, List[Item]]:
    base = _path("/usr/share/tuxpaint/stamps")
    if not os.path.isdir(base):
        raise _missing("tuxpaint_stamps", base)
    classes: Dict[str, List[Item]] = {}
    for cls, folders in _TUXPAINT.items():
        items: List[Item] = []
        for folder in folders:  # only the folder itself: no cartoon/ or toys/ sub-folder
            d = os.path.join(base, folder)
            for fn in sorted(os.listdir(d)):
                if fn.lower().endswith(".png"):
                    items.append(_file_item(os.path.join(d, fn)))
        classes[cls] = items
    return classes


# ----------------------------------------------------------------------------- qabcs
_QABCS = {
    "mammals": ("animals", "bear calf chimpanzee chinchilla cow ferret foal giant_panda hyena "
                "jaguar koala lion lynx moose otter porcupine rhinoceros tiger wallaby yak york"),
    "instruments": ("instrument", "accordion bagpipes bass_drum cello changu clarinet cuica "
                    "cymbals electric_guitar erhu flute gamba grand_piano harmonica iotshin "
                    "ipu natural_horn ney oboe organ piano quena rabel ratchet rozhok "
                    "saxophone slit_drum spoons squeezebox timpani trumpet washint "
                    "western_concert_flute yobel youhikko zhaleyka"),
    "produce": ("food", "apples bananas beans blackberry clove corn date fennel garlic ginger "
                "gooseberry kidney_beans kiwi nectarine peanut pineapple plum shadberry "
                "sorrel uglifruit"),
    "dishes": ("food", "beet_salad casserole cauliflower_au_gratin curry_sausage donut eclair "
               "halva lavash lazanki meat olivier otak-otak roast sprats stewed_duck "
               "stuffed_stomach udon uszka wasabi whole_grain_bread whopper yupka"),
}


def _qabcs() -> Dict[str, List[Item]]:
    base = _path("/usr/share/qabcs/abcs/all/pics")
    if not os.path.isdir(base):
        raise _missing("qabcs_photos", base)
    classes: Dict[str, List[Item]] = {}
    for cls, (folder, names) in _QABCS.items():
        items: List[Item] = []
        for n in sorted(names.split()):
            p = os.path.join(base, folder, n + ".png")
            if not os.path.isfile(p):
                raise _missing("qabcs_photos", p)
            items.append(_file_item(p))
        classes[cls] = items
    return classes


# ----------------------------------------------------------------------------- emoji
_EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
_EMOJI = {
    "mammals": "🐵🐒🦍🦧🐶🐕🦮🐩🐺🦊🦝🐱🐈🦁🐯🐅🐆🐴🫎🫏🐎🦄🦓🦌🦬🐮🐂🐃🐄🐷",
    "birds": "🦃🐔🐓🐣🐤🐥🐦🐧🕊🦅🦆🦢🦉🦤🪶🦩🦚🦜🪽🪿",
    "bugs": "🐌🦋🐛🐜🐝🪲🐞🦗🪳🕷🕸🦂🦟🪰🪱🦠",
    "fruit": "🍇🍈🍉🍊🍋🍌🍍🥭🍎🍏🍐🍑🍒🍓🫐🥝🍅🫒🥥",
    "vegetables": "🥑🍆🥔🥕🌽🌶🫑🥒🥬🥦🧄🧅🥜🫘🌰🫚🫛",
    "vehicles": "🚂🚃🚄🚅🚆🚇🚈🚉🚊🚝🚞🚋🚌🚍🚎🚐🚑🚒🚓🚔🚕🚖🚗🚘🚙🛻🚚🚛🚜🏎",
    "sports": "⚽⚾🥎🏀🏐🏈🏉🎾🥏🎳🏏🏑🏒🥍🏓🏸🥊🥋🥅⛳⛸🎣🤿🎽🎿🛷🥌",
}
ICON_SIZE = 128


def _emoji() -> Dict[str, List[Item]]:
    font_path = _path(_EMOJI_FONT)
    if not os.path.isfile(font_path):
        raise _missing("emoji_icons", font_path)
    cache: Dict[str, ImageFont.FreeTypeFont] = {}

    def render(ch: str) -> Image.Image:
        if "font" not in cache:
            cache["font"] = ImageFont.truetype(font_path, 109)  # the font's only bitmap size
        canvas = Image.new("RGBA", (200, 200), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((20, 20), ch, font=cache["font"], embedded_color=True)
        box = canvas.getbbox()
        if box is None:
            raise RuntimeError(f"emoji U+{ord(ch):04X} rendered empty with {font_path}")
        glyph = canvas.crop(box)
        glyph.thumbnail((ICON_SIZE - 8, ICON_SIZE - 8), Image.LANCZOS)
        out = Image.new("RGBA", (ICON_SIZE, ICON_SIZE), (255, 255, 255, 0))
        out.paste(glyph, ((ICON_SIZE - glyph.width) // 2, (ICON_SIZE - glyph.height) // 2))
        return out

    return {
        cls: [(f"u{ord(ch):05x}", lambda ch=ch: render(ch)) for ch in chars]
        for cls, chars in _EMOJI.items()
    }


_SOURCES: Dict[str, Callable[[], Dict[str, List[Item]]]] = {
    "gcompris_photos": _gcompris,
    "tuxpaint_stamps": _tuxpaint,
    "qabcs_photos": _qabcs,
    "emoji_icons": _emoji,
}


# ----------------------------------------------------------------------------- build
def _to_rgb(im: Image.Image) -> Image.Image:
    im.load()
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        bg.alpha_composite(rgba)
        im = bg
    im = im.convert("RGB")
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return im


def build(name: str, root: str, test_fraction: float = 0.5, seed: int = 0) -> Tuple[str, str]:
    """Write ``root/train/<class>/*`` and ``root/test/<class>/*``; return both folders.

    Any ``train``/``test`` folder already under ``root`` is replaced.  Photos are saved
    as JPEG (quality 95), icons as PNG; all RGB with the longer side <= 256 px.
    """
    if name not in _SOURCES:
        raise KeyError(f"unknown photo set {name!r}; available: {', '.join(AVAILABLE)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    classes = _SOURCES[name]()
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    for d in (train_dir, test_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)
    if name == "emoji_icons":
        ext, fmt, opts = ".png", "PNG", {}
    else:
        ext, fmt, opts = ".jpg", "JPEG", {"quality": 95}
    for cls in sorted(classes):
        items = sorted(classes[cls], key=lambda it: it[0])
        n = len(items)
        if n < 2 * MIN_PER_SIDE:
            raise RuntimeError(f"{name}/{cls}: only {n} images (need {2 * MIN_PER_SIDE})")
        n_test = min(max(round(n * test_fraction), MIN_PER_SIDE), n - MIN_PER_SIDE)
        order = list(range(n))
        random.Random(zlib.crc32(f"{seed}:{name}:{cls}".encode())).shuffle(order)
        test_idx = set(order[:n_test])
        for d in (train_dir, test_dir):
            os.makedirs(os.path.join(d, cls), exist_ok=True)
        for i, (stem, load) in enumerate(items):
            side = test_dir if i in test_idx else train_dir
            im = _to_rgb(load())
            im.save(os.path.join(side, cls, stem + ext), fmt, **opts)
    return train_dir, test_dir


if __name__ == "__main__":  # python bench/photo_sets.py [NAME ROOT]
    import sys

    if len(sys.argv) == 3:
        tr, te = build(sys.argv[1], sys.argv[2])
        for d in (tr, te):
            print(d, {c: len(os.listdir(os.path.join(d, c))) for c in sorted(os.listdir(d))})
    else:
        print("\n".join(install_commands()))
        for k, v in AVAILABLE.items():
            print(f"{k}: {v}")
