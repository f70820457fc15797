"""Model bundles: round trip, atomic writing, and refusal of every damaged or hostile file."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from RICENetLib.bundle import BUNDLE_FILE, CHECKSUM_KEY, BundleFold, header_checksum, load_bundle, write_bundle
from RICENetLib.errors import BundleError, InputError
from RICENetLib.model import build_network, default_architecture

MODALITIES = ["postop", "event", "dose"]


def tiny_architecture(channels: int = 3) -> dict:
    """The real MONAI resnet18 layout, eight times narrower: a bundle test needs shapes, not accuracy."""
    return dict(default_architecture(channels), widen_factor=0.125)


def make_bundle(path: Path, channels: int = 3, n_folds: int = 2, **kwargs) -> tuple[Path, list[torch.nn.Module]]:
    torch.manual_seed(0)
    networks = [build_network(tiny_architecture(channels)) for _ in range(n_folds)]
    folds = [BundleFold(k, (f"T{k}",), (f"V{k}",), {"macro_f1": 0.5 + 0.1 * k, "auc": float("nan")}, epoch=k + 1,
                        state_dict=net.state_dict()) for k, net in enumerate(networks)]
    write_bundle(path, folds, modalities=MODALITIES[:channels] if channels < 3 else MODALITIES,
                 architecture=tiny_architecture(channels), input_size=(32, 32, 32),
                 preprocessing={"spacing_mm": 1.5, "input_size": [32, 32, 32]}, seed=7,
                 training={"learning_rate": 1e-4}, **kwargs)
    return path, networks


def edit_header(bundle: Path, change, seal: bool = True) -> None:
    """Edit bundle.json; with ``seal`` also re-seal it, as a deliberate edit (or a careful attacker) would."""
    header = json.loads((bundle / BUNDLE_FILE).read_text(encoding="utf-8"))
    change(header)
    if seal:
        header[CHECKSUM_KEY] = header_checksum(header)
    (bundle / BUNDLE_FILE).write_text(json.dumps(header))


def replace_weights(bundle: Path, name: str, data: bytes) -> None:
    """Overwrite a weights file *and* update its checksum, as a careful attacker would."""
    (bundle / name).write_bytes(data)

    def fix(header):
        for fold in header["folds"]:
            if fold["weights"] == name:
                fold["sha256"] = hashlib.sha256(data).hexdigest()
    edit_header(bundle, fix)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> tuple[Path, list[torch.nn.Module]]:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "good")


@pytest.fixture
def bundle_copy(good_bundle, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(good_bundle[0], tmp_path / "copy"))


def test_round_trip_gives_the_same_networks(good_bundle):
    path, networks = good_bundle
    bundle = load_bundle(path)
    assert bundle.modalities == tuple(MODALITIES)
    assert bundle.input_size == (32, 32, 32)
    assert bundle.class_names == ("recurrence", "rice")
    assert bundle.preprocessing["spacing_mm"] == 1.5
    assert bundle.metadata["seed"] == 7
    assert bundle.metadata["software"]["torch"] == torch.__version__
    assert bundle.id.startswith("ricenet-postop+event+dose-")
    assert [f.validation_patients for f in bundle.folds] == [("V0",), ("V1",)]
    summary = bundle.metadata["metrics"]["macro_f1"]
    assert summary["mean"] == pytest.approx(0.55) and summary["sd"] == pytest.approx(0.0707107, rel=1e-5)
    assert bundle.folds[0].metrics["auc"] is None  # NaN is stored as null, keeping bundle.json strict JSON
    x = torch.randn(1, 3, 32, 32, 32)
    models = bundle.models("cpu")
    for model, original in zip(models, networks):
        assert not model.training
        original.eval()
        with torch.no_grad():
            assert torch.equal(model(x), original(x))


def test_weights_files_are_plain_safetensors_with_checksums(good_bundle):
    path, _ = good_bundle
    header = json.loads((path / BUNDLE_FILE).read_text(encoding="utf-8"))
    for fold in header["folds"]:
        data = (path / fold["weights"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == fold["sha256"]
        header_length = int.from_bytes(data[:8], "little")
        about = json.loads(json.loads(data[8:8 + header_length])["__metadata__"]["ricenet"])
        assert about == {"format": "ricenet-bundle", "fold": fold["index"], "modalities": MODALITIES}


def test_writer_is_atomic_and_refuses_to_overwrite(tmp_path, good_bundle):
    with pytest.raises(InputError, match="already exists"):
        make_bundle(good_bundle[0])
    target = tmp_path / "broken"
    with pytest.raises(FileNotFoundError):
        make_bundle(target, extra_files={"log.csv": tmp_path / "does-not-exist.csv"})
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]


def test_missing_fold_file(bundle_copy):
    (bundle_copy / "fold1.safetensors").unlink()
    with pytest.raises(BundleError, match=r"weights of fold 1 \(fold1.safetensors\) are missing"):
        load_bundle(bundle_copy)


def test_tampered_file_is_refused_by_checksum(bundle_copy):
    data = bytearray((bundle_copy / "fold0.safetensors").read_bytes())
    data[-10] ^= 0xFF  # one flipped bit in a weight: still valid safetensors, wrong numbers
    (bundle_copy / "fold0.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(bundle_copy)


def test_corrupt_file_is_refused(bundle_copy):
    data = (bundle_copy / "fold0.safetensors").read_bytes()
    replace_weights(bundle_copy, "fold0.safetensors", data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(bundle_copy)


class _Payload:
    """Unpickling this would create a file: the loader must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_safetensors_is_refused_without_running_it(bundle_copy, tmp_path, writer):
    marker = tmp_path / "code-ran"
    payload = {"conv1.weight": _Payload(marker)}
    if writer == "pickle":
        data = pickle.dumps(payload)
    else:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
    replace_weights(bundle_copy, "fold0.safetensors", data)
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(bundle_copy)
    assert not marker.exists()


def test_wrong_channel_count_in_header(bundle_copy):
    edit_header(bundle_copy, lambda h: h.update(modalities=["event", "dose"]))
    with pytest.raises(BundleError, match=r"3 input channel\(s\) but the bundle lists 2 modalities"):
        load_bundle(bundle_copy)


def test_weights_with_wrong_channel_count(bundle_copy, tmp_path):
    two_channel, _ = make_bundle(tmp_path / "two", channels=2, n_folds=1)
    replace_weights(bundle_copy, "fold0.safetensors", (two_channel / "fold0.safetensors").read_bytes())
    with pytest.raises(BundleError, match=r"conv1.weight has shape .*takes 2 input channel\(s\), the bundle's 3"):
        load_bundle(bundle_copy)


def test_weights_of_another_network_are_refused(bundle_copy):
    from safetensors.torch import save

    replace_weights(bundle_copy, "fold1.safetensors", save({"weight": torch.zeros(3)}))
    with pytest.raises(BundleError, match="does not hold the weights of the network"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("version, message", [(2, "format version 2.*Update the extension"),
                                              (0, "format version 0"), ("1", "no valid format_version")])
def test_unknown_format_version(bundle_copy, version, message):
    edit_header(bundle_copy, lambda h: h.update(format_version=version))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("change, message", [
    (lambda h: h.update(modalities=["dose", "postop", "event"]), "in that order"),
    (lambda h: h.update(input_size=[32, 32]), "input_size"),
    (lambda h: h["folds"][0].update(weights="../fold0.safetensors"), "plain file name"),
    (lambda h: h["folds"][1].update(index=0), "fold index twice"),
    (lambda h: h.update(architecture=dict(h["architecture"], name="vit")), "Unknown network 'vit'"),
])
def test_malformed_header(bundle_copy, change, message):
    edit_header(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(tmp_path)
    (tmp_path / BUNDLE_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
