"""``ricenet bundle verify|sign BUNDLE``: check a model bundle, or re-seal its ``bundle.json`` after a deliberate edit."""

from __future__ import annotations

import argparse

NAME = "bundle"
HELP = "verify a model bundle, or seal its bundle.json again after a deliberate edit"
DESCRIPTION = (
    "verify: load the bundle as predict would (checksums of bundle.json and of every weights file, shapes, "
    "settings) and print what it says. sign: after a deliberate edit of bundle.json (or for a bundle written "
    "before bundle.json was sealed), validate everything else, print what is being sealed, and record the new "
    "SHA-256 of bundle.json in its bundle_sha256. The seal catches edits made unknowingly; it is a checksum, "
    "not a signature with a key. Read what sign prints before you trust the bundle."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("verify", "sign"), help="verify the bundle, or seal its bundle.json")
    parser.add_argument("bundle", help="model bundle folder (bundle.json + fold*.safetensors)")


def run(args: argparse.Namespace) -> int:
    from ..bundle import CHECKSUM_KEY, describe_bundle, load_bundle, sign_bundle

    if args.action == "verify":
        bundle = load_bundle(args.bundle)
        print("\n".join(describe_bundle(bundle)))
        print(f"OK: bundle.json and {len(bundle.folds)} weights file(s) match their checksums.")
        return 0
    bundle, state = sign_bundle(args.bundle)
    print("\n".join(describe_bundle(bundle)))
    if state == "valid":
        print("bundle.json was already sealed with this content; nothing changed.")
    else:
        before = "had no seal" if state == "missing" else "had been edited since it was sealed"
        print(f"Sealed: bundle.json {before}; its {CHECKSUM_KEY} now records the content shown above.")
    return 0
