"""Every registered model, at tiny widths: shapes, gradients, deep supervision, errors, save/load."""

from __future__ import annotations

import io
import json

import pytest
import torch
from click.testing import CliRunner

from segtrain.errors import SegtrainError
from segtrain.models import MODELS, build_model, count_macs, count_parameters, model_info
from segtrain.models.base import nearest_multiple
from segtrain.models.blocks import DropBlock2d

NAMES = list(MODELS)
SIZES = [(64, 64), (96, 64)]  # divisible by 32, the largest required divisor; H != W on purpose
DEEP_SUPERVISION_OUTPUTS = {"unetpp": 4, "resunetpp-cbam": 3}  # at the default depths

# Parameters at default widths, in millions: the papers' figures where they give one.
PAPER_PARAMS_M = {
    "unet": (30.5, 31.5),            # ~31.0M, the classic figure with 2x2 up-convolutions
    "unet-strided": (33.0, 35.5),
    "attention-unet": (31.0, 33.5),
    "unetpp": (8.8, 9.3),            # paper: 9.04M
    "resunetpp": (3.9, 4.2),         # paper: 4.07M
    "resunetpp-cbam": (4.0, 5.5),
    "segnet": (29.0, 30.0),          # paper: 29.5M
    "linknet": (11.2, 11.8),         # paper: 11.5M
    "dilated-unet": (10.0, 15.0),
    "unet-res-aspp-cbam": (8.0, 14.0),
    "sa-unet": (0.50, 0.58),         # paper: 0.54M
}


@pytest.fixture(autouse=True, scope="module")
def few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def tiny(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, base_channels=kwargs.pop("base_channels", 8), **kwargs)


def as_list(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_at_two_sizes(name):
    model = tiny(name).eval()
    with torch.no_grad():
        for h, w in SIZES:
            out = model(torch.randn(2, 3, h, w))
            assert isinstance(out, torch.Tensor)
            assert out.shape == (2, 1, h, w)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_gradients_everywhere(name):
    model = tiny(name).train()
    outs = as_list(model(torch.randn(2, 3, 64, 64)))
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_and_other_input_channels(name):
    model = tiny(name, in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3, 64, 64)


def test_every_deep_supervision_model_is_tested():
    with_switch = {name for name, spec in MODELS.items() if "deep_supervision" in spec.defaults}
    assert set(DEEP_SUPERVISION_OUTPUTS) == with_switch


@pytest.mark.parametrize("name", DEEP_SUPERVISION_OUTPUTS)
def test_deep_supervision_outputs(name):
    model = tiny(name, deep_supervision=True).train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert isinstance(outs, list) and len(outs) == DEEP_SUPERVISION_OUTPUTS[name]
    assert all(o.shape == (2, 1, 64, 64) for o in outs)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)
    # Switched off, training mode gives a single tensor and the extra heads are gone.
    plain = tiny(name, deep_supervision=False).train()
    assert isinstance(plain(torch.randn(2, 3, 64, 64)), torch.Tensor)
    assert count_parameters(plain) < count_parameters(model)


@pytest.mark.parametrize("name", NAMES)
def test_size_not_divisible_names_the_nearest_valid_size(name):
    model = tiny(name).eval()
    d = model.required_divisor
    h, w = 2 * d + 1, 3 * d - 2
    with pytest.raises(SegtrainError) as err:
        model(torch.randn(1, 3, h, w))
    message = str(err.value)
    assert message.startswith(name)
    assert f"divisible by {d}; got {h}x{w}, nearest valid {2 * d}x{3 * d}" in message


def test_odd_size_message_example():
    expected = r"^unet needs sides divisible by 16; got 100x90, nearest valid 96x96$"
    with pytest.raises(SegtrainError, match=expected):
        tiny("unet")(torch.randn(1, 3, 100, 90))
    assert nearest_multiple(5, 16) == 16  # never rounds down to 0


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(SegtrainError, match="3 input channels; got 1"):
        tiny("unet")(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_reproduces_outputs(name):
    model = tiny(name, seed=0).train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))  # moves the batch-norm running statistics off their defaults
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    # Rebuilt from what a checkpoint stores: the name, the resolved options, the state dict.
    torch.manual_seed(1)
    clone = build_model(model.segkit_name, **model.segkit_kwargs)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), clone.eval()(x))


def test_build_model_records_name_and_resolved_kwargs():
    model = build_model("unet", base_channels=8, up="bilinear")
    assert model.segkit_name == "unet"
    assert model.segkit_kwargs == {"in_channels": 3, "num_classes": 1, "base_channels": 8,
                                   "depth": 4, "up": "bilinear"}
    assert model.required_divisor == 16


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(SegtrainError) as err:
        build_model("unet3d")
    assert "unet3d" in str(err.value)
    assert all(name in str(err.value) for name in NAMES)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(SegtrainError, match=r"no option 'deep_supervision'.*base_channels, depth, up"):
        build_model("unet", deep_supervision=True)


@pytest.mark.parametrize("kwargs", [{"up": "pixelshuffle"}, {"depth": 0}, {"base_channels": 2.5},
                                    {"num_classes": 0}])
def test_bad_option_values_are_clear_errors(kwargs):
    with pytest.raises(SegtrainError, match="unet: "):
        build_model("unet", **kwargs)


def test_default_parameter_counts_match_the_papers():
    assert set(PAPER_PARAMS_M) == set(MODELS), "give every new model its expected parameter range"
    for name, (low, high) in PAPER_PARAMS_M.items():
        with torch.device("meta"):  # default widths cost nothing on the meta device
            millions = count_parameters(build_model(name)) / 1e6
        assert low <= millions <= high, f"{name}: {millions:.2f}M outside [{low}, {high}]"


def test_count_macs_leaves_the_model_as_it_was():
    model = tiny("resunetpp-cbam").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs = count_macs(model, size=(64, 64))
    assert macs > 0
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # MACs scale with the pixel count.
    assert count_macs(model, size=(128, 128)) == pytest.approx(4 * macs, rel=0.01)


def test_model_info_for_the_classic_unet():
    info = model_info("unet")
    assert info["params"] == pytest.approx(31.0e6, rel=0.01)
    assert 40e9 < info["macs"] < 60e9
    assert info["required_divisor"] == 16
    assert model_info("unet", size=(100, 100))["macs"] is None


def test_cli_lists_every_model():
    from segtrain.cli import main

    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in NAMES:
        assert any(line.split()[0] == name for line in lines if line.strip()), name
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    from segtrain.models import ENCODER_MODELS
    on_encoders = [f"{name}:{spec.defaults['encoder']}" for name, spec in ENCODER_MODELS.items()]
    assert [row["name"] for row in rows] == NAMES + on_encoders
    assert all(row["params"] > 0 and row["macs"] > 0 for row in rows)


def test_linknet_loads_a_local_encoder_state_dict(tmp_path):
    source = tiny("linknet", seed=3)
    path = tmp_path / "resnet18 weights.pt"
    # torchvision's layout: the encoder's keys plus a classifier, which is ignored.
    state = dict(source.encoder.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 64), torch.zeros(10)
    torch.save(state, path)
    model = tiny("linknet", seed=4, encoder_weights=str(path))
    loaded = model.encoder.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in source.encoder.state_dict().items())
    # A checkpoint rebuilds the architecture without the file: the weights are in its state dict.
    assert model.segkit_kwargs["encoder_weights"] is None
    assert model.segkit_init == {"encoder_weights": str(path)}
    path.unlink()
    build_model("linknet", **model.segkit_kwargs).load_state_dict(model.state_dict())


def test_linknet_encoder_weights_errors(tmp_path):
    with pytest.raises(SegtrainError, match="no such file"):
        tiny("linknet", encoder_weights=str(tmp_path / "missing.pt"))
    wide = tmp_path / "wide.pt"
    torch.save(tiny("linknet", base_channels=16).encoder.state_dict(), wide)
    with pytest.raises(SegtrainError, match=r"wide\.pt.*shape mismatches"):
        tiny("linknet", encoder_weights=str(wide))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SegtrainError, match=r"junk\.pt: cannot be read"):
        tiny("linknet", encoder_weights=str(junk))


def test_dropblock_drops_blocks_in_training_only():
    block = DropBlock2d(drop_prob=0.3, block_size=3)
    x = torch.ones(2, 4, 16, 16)
    torch.manual_seed(0)
    dropped = block.train()(x)
    assert (dropped == 0).any() and dropped.shape == x.shape
    assert dropped.mean().item() == pytest.approx(1.0, rel=1e-5)  # rescaled to keep the sum
    assert torch.equal(block.eval()(x), x)
