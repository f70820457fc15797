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


# -- the seal of bundle.json ---------------------------------------------------------------------------------

def _cli(argv, capsys):
    from RICENetLib.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_edited_bundle_json_is_refused_until_signed(bundle_copy, capsys):
    """An edit changes what the weights mean (here the voxel size): refused, until sealed on purpose."""
    edit_header(bundle_copy, lambda h: h["preprocessing"].update(spacing_mm=2.0), seal=False)
    with pytest.raises(BundleError, match=r"bundle.json was changed after the bundle was written.*"
                                          r"ricenet bundle sign .*copy"):
        load_bundle(bundle_copy)
    code, out, err = _cli(["bundle", "verify", str(bundle_copy)], capsys)
    assert code == 2 and "was changed after" in err and "Traceback" not in err and len(err.splitlines()) == 1
    code, out, err = _cli(["bundle", "sign", str(bundle_copy)], capsys)
    assert code == 0, err
    assert '"spacing_mm": 2.0' in out and "Sealed: bundle.json had been edited" in out  # it shows what it seals
    assert load_bundle(bundle_copy).preprocessing["spacing_mm"] == 2.0
    code, out, _ = _cli(["bundle", "verify", str(bundle_copy)], capsys)
    assert code == 0 and "OK" in out
    code, out, _ = _cli(["bundle", "sign", str(bundle_copy)], capsys)
    assert code == 0 and "already sealed" in out


def test_reformatting_bundle_json_keeps_the_seal(bundle_copy):
    """The checksum is over the content (keys sorted, compact), not the bytes: indentation and order are free."""
    header = json.loads((bundle_copy / BUNDLE_FILE).read_text(encoding="utf-8"))
    (bundle_copy / BUNDLE_FILE).write_text(json.dumps(dict(reversed(list(header.items()))), indent=7))
    assert load_bundle(bundle_copy).id == header["id"]


def test_bundle_from_before_the_seal_is_refused_naming_the_sign_command(bundle_copy, capsys):
    edit_header(bundle_copy, lambda h: h.pop(CHECKSUM_KEY), seal=False)
    with pytest.raises(BundleError, match=rf"has no {CHECKSUM_KEY}.*'ricenet bundle sign .*copy'"):
        load_bundle(bundle_copy)
    code, out, err = _cli(["bundle", "sign", str(bundle_copy)], capsys)
    assert code == 0 and "had no seal" in out
    load_bundle(bundle_copy)


def test_sign_refuses_a_bundle_that_cannot_load(bundle_copy, capsys):
    edit_header(bundle_copy, lambda h: h.update(class_names=["rice", "rice"]), seal=False)
    before = (bundle_copy / BUNDLE_FILE).read_bytes()
    code, _, err = _cli(["bundle", "sign", str(bundle_copy)], capsys)
    assert code == 2 and "different, non-empty class names" in err
    assert (bundle_copy / BUNDLE_FILE).read_bytes() == before  # nothing sealed


def test_the_writers_seal_what_they_write(tmp_path):
    """Every bundle this project writes (training, the untrained demo/self-test bundle) goes through write_bundle."""
    from RICENetLib.slicer_logic import untrained_bundle

    header = json.loads((untrained_bundle(tmp_path / "u") / BUNDLE_FILE).read_text(encoding="utf-8"))
    assert header[CHECKSUM_KEY] == header_checksum(header)


# -- permissions, unreadable files ---------------------------------------------------------------------------

@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_bundle_is_readable_as_the_umask_allows(tmp_path, umask, file_mode, folder_mode):
    import os
    import stat

    before = os.umask(umask)
    try:
        path, _ = make_bundle(tmp_path / "shared", n_folds=1, extra_files={"log.csv": __file__})
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == folder_mode
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {"bundle.json": file_mode, "fold0.safetensors": file_mode, "log.csv": file_mode}


def test_unreadable_weights_are_a_clear_error(bundle_copy, monkeypatch):
    """chmod 000 on a colleague's bundle. Root reads any file (and this interpreter is not reachable by
    'nobody' here), so as root the read itself is made to fail as it would for another user."""
    import errno
    import os

    target = bundle_copy / "fold1.safetensors"
    os.chmod(target, 0)
    if os.geteuid() == 0:
        read_bytes = Path.read_bytes

        def denied(self):
            if self == target:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return read_bytes(self)
        monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(BundleError, match=r"fold1.safetensors cannot be read \(Permission denied\)\. .*chmod -R a\+rX"):
        load_bundle(bundle_copy)


# -- further hostile or broken descriptions ------------------------------------------------------------------

def test_nan_weights_are_refused_when_written_and_when_loaded(bundle_copy, tmp_path):
    from safetensors.torch import load, save

    tensors = load((bundle_copy / "fold0.safetensors").read_bytes())
    tensors["fc.weight"][0, 0] = float("nan")
    replace_weights(bundle_copy, "fold0.safetensors", save(tensors))
    with pytest.raises(BundleError, match=r"fold0.safetensors: tensor fc.weight holds NaN or infinite values"):
        load_bundle(bundle_copy)
    fold = BundleFold(0, (), (), {}, state_dict=tensors)
    with pytest.raises(BundleError, match="holds NaN"):
        write_bundle(tmp_path / "nan", [fold], modalities=MODALITIES, architecture=tiny_architecture(),
                     input_size=(32, 32, 32), preprocessing={}, seed=0)
    assert not (tmp_path / "nan").exists() and not list(tmp_path.glob(".nan*"))


def test_absurd_input_size_is_refused_with_the_memory_it_needs(bundle_copy):
    def huge(h):
        h["input_size"] = [2048, 2048, 2048]
        h["preprocessing"]["input_size"] = [2048, 2048, 2048]
    edit_header(bundle_copy, huge)
    with pytest.raises(BundleError, match=r"copy: its input size 2048×2048×2048 needs about 4.6 TiB of memory for one forward pass \(at least 2.3 TiB\), more than this machine has"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("change, message", [
    (lambda h: h["preprocessing"].update(zoom=2), "preprocessing cannot be used.*Unknown preprocessing parameter"),
    (lambda h: h["preprocessing"].update(spacing_mm=0.0), "preprocessing cannot be used.*spacing_mm"),
    (lambda h: h["preprocessing"].update(input_size=[64, 64, 64]), r"makes inputs of \[64, 64, 64\].*\[32, 32, 32\]"),
    (lambda h: h.update(class_names=["rice", "rice"]), "different, non-empty class names"),
    (lambda h: h.update(seed="seven"), "'seed' must be an integer"),
    (lambda h: h["folds"][1].update(weights="fold0.safetensors"), "folds share the weights file fold0"),
    (lambda h: h["folds"][0].update(validation_patients="V0"), "'validation_patients' must be a list"),
    (lambda h: h["folds"][0].update(epoch=-3), "'epoch' must be a non-negative integer"),
    (lambda h: h["folds"][0].update(index=True), "non-negative integer 'index'"),
    (lambda h: h["folds"][0].update(metrics={"macro_f1": "high"}), "'metrics' must map names to numbers"),
    (lambda h: h["architecture"].update(widen_factor=-1), "'widen_factor' = -1 is not a plain value"),
    (lambda h: h["architecture"].update(conv1_t_size="7"), "Invalid architecture arguments"),
    (lambda h: h["architecture"].update(spatial_dims=2), "shape"),
])
def test_malformed_header_fields(bundle_copy, change, message):
    edit_header(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("text, message", [
    ('{"format": "ricenet-bundle", "format": "other"}', "key 'format' appears twice"),
    ('{"format": "ricenet-bundle", "seed": NaN}', "NaN is not a JSON value"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_bundle_json_that_is_not_strict_json(tmp_path, text, message):
    (tmp_path / BUNDLE_FILE).write_text(text)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path)


def test_huge_bundle_json_is_refused_unread(tmp_path):
    with open(tmp_path / BUNDLE_FILE, "wb") as handle:
        handle.truncate(200 * 2**20)  # sparse: costs no disk
    with pytest.raises(BundleError, match="is 200 MiB; a bundle description is a few kB"):
        load_bundle(tmp_path)


def test_bundle_writer_killed_midway_leaves_nothing_after_the_next_write(good_bundle, tmp_path):
    """A kill while the bundle is being written (as at the end of a training), then the write again (resume)."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import os, signal, sys\nimport RICENetLib.bundle as b\n"
            "b.load_bundle = lambda path, **kw: os.kill(os.getpid(), signal.SIGKILL)\n"
            "sys.path.insert(0, sys.argv[2])\nfrom test_bundle import make_bundle\nmake_bundle(b.Path(sys.argv[1]))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out"), str(Path(__file__).parent)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(left) == 1 and (left[0] / BUNDLE_FILE).exists() and not (tmp_path / "out").exists()
    make_bundle(tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    load_bundle(tmp_path / "out")


def test_a_folder_others_may_not_enter_is_not_reported_as_missing_bundle_json(bundle_copy, monkeypatch):
    import errno
    import os

    stat = Path.stat

    def denied(self, **kwargs):
        if self == bundle_copy / BUNDLE_FILE:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return stat(self, **kwargs)
    monkeypatch.setattr(Path, "stat", denied)
    with pytest.raises(BundleError, match=r"bundle.json cannot be read \(Permission denied\)"):
        load_bundle(bundle_copy)
