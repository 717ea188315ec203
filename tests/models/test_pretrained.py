"""Pretrained weights by name, served by a real HTTP server on 127.0.0.1 (never the internet):
download once into the cache, checksums (file-name prefix; sidecar for pytorchvideo), offline and
wrong-file errors, conversion into the model."""

import hashlib
import os
import subprocess
import sys
import threading

import pytest
import torch
import torchvision
from pytorchvideo.models.hub import c2d_r50, i3d_r50, slow_r50
from weightserver import closed_port, serve  # noqa: F401 (fixture)

from videoattn.models.pretrained import PRETRAINED, load_pretrained_weights, verify_by_conversion
from videoattn.models.resnet3d import ResNet3D
from videoattn.utils import download
from videoattn.utils.download import DownloadError, cache_dir, fetch, sidecar_path
from videoattn.utils.outputs import MANIFEST

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ptv_i3d_state():
    torch.manual_seed(0)
    return i3d_r50(pretrained=False).state_dict()


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and excinfo.value.__cause__ is None
    return msg


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------------------------ registry
def test_registry_urls_come_from_the_publishers():
    from pytorchvideo.models.hub.resnet import checkpoint_paths

    for name in ("i3d_r50", "c2d_r50", "slow_r50"):
        assert PRETRAINED[name]["url"] == checkpoint_paths[name]
    assert PRETRAINED["resnet50_imagenet"]["url"] == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert download.hash_prefix(download.file_name(PRETRAINED["resnet18_imagenet"]["url"])) == "f37072fd"
    assert download.hash_prefix("I3D_8x8_R50.pyth") is None


@pytest.mark.parametrize("name,builder", [("c2d_r50", c2d_r50), ("slow_r50", slow_r50)])
def test_registry_presets_match_the_pytorchvideo_models(name, builder, tmp_path):
    # the preset named for each file converts every key and shape of pytorchvideo's own model
    path = tmp_path / "w.pyth"
    torch.save({"model_state": builder(pretrained=False).state_dict()}, path)
    verify_by_conversion(str(path), PRETRAINED[name])
    with pytest.raises(ValueError, match="does not convert into I3D_R50"):  # and not into another preset
        verify_by_conversion(str(path), PRETRAINED["i3d_r50"])


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(download.HOME_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert cache_dir() == str(tmp_path / "th" / "hub" / "videoattn" / "weights")
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / "weights")
    assert cache_dir(str(tmp_path / "c")) == str(tmp_path / "c")


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown pretrained weights 'i3d_r51'; choose one of c2d_r50, i3d_r50"):
        load_pretrained_weights(torch.nn.Linear(1, 1), "i3d_r51")


# ----------------------------------------------------------------------------- pytorchvideo
@pytest.mark.slow  # starts a fresh Python process
def test_pytorchvideo_good_file_loads_once_with_kinetics_classes(serve, ptv_i3d_state, tmp_path):
    root, server = serve()
    torch.save({"model_state": ptv_i3d_state, "epoch": 196}, root / "I3D_8x8_R50.pyth")
    cache = tmp_path / "cache"
    model = ResNet3D(depth=50, temporal="i3d", num_classes=400)
    info = load_pretrained_weights(model, "i3d_r50", cache=str(cache), base_url=server.url)
    assert server.requests == ["/I3D_8x8_R50.pyth"]
    assert info.path == str(cache / "I3D_8x8_R50.pyth") and info.source == "pytorchvideo"
    assert info.sha256 == _sha256(root / "I3D_8x8_R50.pyth")
    assert open(sidecar_path(info.path)).read().split() == [info.sha256, "I3D_8x8_R50.pyth"]
    assert len(info.classes) == 400 and info.classes[0] == "abseiling" and info.notes == []
    assert torch.equal(model.stem.conv.weight, ptv_i3d_state["blocks.0.conv.weight"])
    assert torch.equal(model.res5[2].bn3.running_var, ptv_i3d_state["blocks.5.res_blocks.2.branch2.norm_c.running_var"])
    assert torch.equal(model.head.proj.weight, ptv_i3d_state["blocks.6.proj.weight"])
    # download once: a second load (the sidecar re-checked) and a fresh process do not ask the server
    again = load_pretrained_weights(
        ResNet3D(depth=50, num_classes=400), "i3d_r50", cache=str(cache), base_url=server.url
    )
    assert again.sha256 == info.sha256
    code = (
        "import sys; from videoattn.models.pretrained import fetch_pretrained;"
        "print(fetch_pretrained('i3d_r50', sys.argv[1], sys.argv[2])[0])"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code, str(cache), server.url], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == info.path
    assert server.requests == ["/I3D_8x8_R50.pyth"]


def test_pytorchvideo_head_of_another_class_count_is_left_for_fine_tuning(serve, ptv_i3d_state, tmp_path):
    root, server = serve()
    torch.save({"model_state": ptv_i3d_state}, root / "I3D_8x8_R50.pyth")
    model = ResNet3D(depth=50, temporal="i3d", num_classes=10, nonlocal_locations=[[], [1], [], []])
    head = model.head.proj.weight.clone()
    info = load_pretrained_weights(model, "i3d_r50", cache=str(tmp_path / "c"), base_url=server.url)
    assert info.classes is None and torch.equal(model.head.proj.weight, head)
    assert torch.equal(model.res4[0].conv1.weight, ptv_i3d_state["blocks.4.res_blocks.0.branch2.conv_a.weight"])
    assert "head.proj.weight: left as initialised" in info.notes
    assert any(".nl." in n for n in info.notes)
    with pytest.raises(ValueError, match="do not fit this model"):  # another depth is an error, file kept
        load_pretrained_weights(ResNet3D(depth=18), "i3d_r50", cache=str(tmp_path / "c"), base_url=server.url)
    assert os.path.isfile(info.path)


@pytest.mark.parametrize("spoil", ["drop_key", "unknown_key", "wrong_shape"])
def test_pytorchvideo_file_that_does_not_convert_is_rejected(serve, ptv_i3d_state, tmp_path, spoil):
    root, server = serve()
    state = dict(ptv_i3d_state)
    if spoil == "drop_key":
        state.pop("blocks.3.res_blocks.1.branch2.norm_b.weight")
    elif spoil == "unknown_key":
        state["blocks.3.res_blocks.1.branch2.conv_x.weight"] = torch.zeros(1)
    else:
        state["blocks.6.proj.weight"] = torch.zeros(10, 2048)
    torch.save({"model_state": state}, root / "I3D_8x8_R50.pyth")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="failed verification: it (does not convert|lacks 1 keys)") as e:
        load_pretrained_weights(ResNet3D(depth=50, num_classes=400), "i3d_r50", cache=str(cache), base_url=server.url)
    assert "the file was removed" in _one_line_error(e)
    assert sorted(os.listdir(cache)) == [MANIFEST, "I3D_8x8_R50.pyth.lock"]  # no file, no sidecar, no temp


def test_sidecar_catches_a_cached_file_that_changed(serve, ptv_i3d_state, tmp_path):
    root, server = serve()
    torch.save({"model_state": ptv_i3d_state}, root / "I3D_8x8_R50.pyth")
    cache = str(tmp_path / "cache")
    path, sha = download.fetch(
        PRETRAINED["i3d_r50"]["url"], cache, server.url, verify=lambda p: verify_by_conversion(p, PRETRAINED["i3d_r50"])
    )
    state = dict(ptv_i3d_state)
    state["blocks.6.proj.bias"] = state["blocks.6.proj.bias"] + 1  # still converts: only the sidecar can tell
    torch.save({"model_state": state}, path)
    with pytest.raises(DownloadError, match="changed since it was verified") as e:
        load_pretrained_weights(ResNet3D(depth=50, num_classes=400), "i3d_r50", cache=cache, base_url=server.url)
    assert sha[:16] in _one_line_error(e)
    assert not os.path.exists(path) and not os.path.exists(sidecar_path(path))
    model = ResNet3D(depth=50, num_classes=400)  # the next call downloads the published file again
    info = load_pretrained_weights(model, "i3d_r50", cache=cache, base_url=server.url)
    assert info.sha256 == sha and len(server.requests) == 2
    assert torch.equal(model.head.proj.bias, ptv_i3d_state["blocks.6.proj.bias"])


# ------------------------------------------------------------------------------ torchvision
def _torchvision_r18_file(folder) -> tuple:
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    tmp = folder / "r18.pth"
    torch.save(state, tmp)
    name = f"resnet18-{_sha256(tmp)[:8]}.pth"
    os.rename(tmp, folder / name)
    return name, state


def test_torchvision_file_with_its_hash_prefix_is_inflated(serve, tmp_path, monkeypatch):
    root, server = serve()
    name, state = _torchvision_r18_file(root)
    registry = {
        "resnet18_imagenet": dict(PRETRAINED["resnet18_imagenet"], url=f"https://download.pytorch.org/models/{name}")
    }
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "home"))  # cache from the environment,
    monkeypatch.setenv(download.URL_ENV, server.url)  # and the mirror too
    model = ResNet3D(depth=18, temporal="i3d", num_classes=1000)
    info = load_pretrained_weights(model, "resnet18_imagenet", registry=registry)
    assert info.path == str(tmp_path / "home" / "weights" / name) and server.requests == [f"/{name}"]
    assert not os.path.exists(sidecar_path(info.path))  # the published prefix is the check
    assert info.classes == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert torch.allclose(model.stem.conv.weight.sum(dim=2), state["conv1.weight"], atol=1e-6)  # mean inflation
    assert torch.equal(model.head.proj.weight, state["fc.weight"])
    info400 = load_pretrained_weights(ResNet3D(depth=18, num_classes=400), "resnet18_imagenet", registry=registry)
    assert info400.classes is None and len(server.requests) == 1


def test_wrong_checksum_discards_the_download_and_keeps_a_file_put_by_hand(serve, tmp_path):
    root, server = serve()
    name, _ = _torchvision_r18_file(root)
    os.rename(root / name, root / "resnet18-f37072fd.pth")  # the published name, other bytes
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch for .*resnet18-f37072fd.pth") as e:
        load_pretrained_weights(
            ResNet3D(depth=18, num_classes=1000), "resnet18_imagenet", cache=str(cache), base_url=server.url
        )
    assert "does not start with f37072fd" in _one_line_error(e)
    assert sorted(os.listdir(cache)) == ["resnet18-f37072fd.pth.lock"]
    # a file put into the cache by hand is checked too; when wrong it is refused, never removed (issue 19)
    os.rename(root / "resnet18-f37072fd.pth", cache / "resnet18-f37072fd.pth")
    mine = (cache / "resnet18-f37072fd.pth").read_bytes()
    with pytest.raises(DownloadError, match="not removed \\(it was not downloaded here\\): move it away"):
        fetch(PRETRAINED["resnet18_imagenet"]["url"], str(cache))
    assert (cache / "resnet18-f37072fd.pth").read_bytes() == mine and len(server.requests) == 1


def test_a_pytorchvideo_file_put_by_hand_is_never_removed(ptv_i3d_state, tmp_path):
    """issue 19: the cache removes only what it downloaded; a file put there by hand that fails
    verification, or changes after it was verified, is refused in one line and kept."""
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / "I3D_8x8_R50.pyth"
    torch.save({"model_state": {"w": torch.ones(1)}}, path)  # not I3D weights
    mine = path.read_bytes()
    with pytest.raises(DownloadError, match="failed verification: .*; not removed \\(it was not downloaded here\\)"):
        load_pretrained_weights(
            ResNet3D(depth=50, num_classes=400),
            "i3d_r50",
            cache=str(cache),
            base_url=f"http://127.0.0.1:{closed_port()}",
        )
    assert path.read_bytes() == mine and not os.path.exists(sidecar_path(str(path)))
    torch.save({"model_state": ptv_i3d_state}, path)  # the right file, by hand: verified, recorded
    load_pretrained_weights(ResNet3D(depth=50, num_classes=400), "i3d_r50", cache=str(cache))
    sidecar = open(sidecar_path(str(path))).read()
    state = dict(ptv_i3d_state)
    state["blocks.6.proj.bias"] = state["blocks.6.proj.bias"] + 1
    torch.save({"model_state": state}, path)  # changed by hand after it was verified
    mine = path.read_bytes()
    with pytest.raises(DownloadError, match="changed since it was verified .*; not removed"):
        load_pretrained_weights(ResNet3D(depth=50, num_classes=400), "i3d_r50", cache=str(cache))
    assert path.read_bytes() == mine and open(sidecar_path(str(path))).read() == sidecar


def test_unreachable_server_names_url_and_cache_path(tmp_path):
    base = f"http://127.0.0.1:{closed_port()}"
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as e:
        load_pretrained_weights(ResNet3D(depth=50, num_classes=400), "slow_r50", cache=str(cache), base_url=base)
    msg = _one_line_error(e)
    assert f"cannot download {base}/SLOW_8x8_R50.pyth" in msg
    assert f"put the file by hand at {cache / 'SLOW_8x8_R50.pyth'}" in msg
    assert sorted(os.listdir(cache)) == ["SLOW_8x8_R50.pyth.lock"]


def test_missing_file_on_server_is_one_line(serve, tmp_path):
    _, server = serve()
    with pytest.raises(DownloadError, match=r"cannot download .*/C2D_8x8_R50.pyth \(HTTP 404 "):
        fetch(PRETRAINED["c2d_r50"]["url"], str(tmp_path / "c"), server.url)


def test_concurrent_callers_download_once(serve, tmp_path):
    root, server = serve(delay_s=0.5)
    name, _ = _torchvision_r18_file(root)
    url = f"https://example.invalid/models/{name}"
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(url, str(tmp_path / "cache"), server.url))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 4
    assert server.requests == [f"/{name}"]
    assert _sha256(results[0][0]) == results[0][1] == _sha256(root / name)
