import hashlib
import os
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.infra.errors import FileError
from contrastlab.methods.encoders import (
    ARCHS,
    PatchWhitening,
    StridedConv2x2,
    _MatmulBackwardConv,
    load_encoder,
    make_encoder,
    save_encoder,
    weights_digest,
)
from contrastlab.pipeline.embed import embed_images


def test_output_is_32_d_for_mnist_and_cifar_shapes():
    for channels, size in [(1, 28), (3, 32)]:
        out = make_encoder(channels)(torch.zeros(4, channels, size, size))
        assert out.shape == (4, 32)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_the_protocol():
    # conv weights 1*32*4 + 32*64*4 + 64*128*4 + 128*256*4 + 256*8*4, BatchNorm 2*(64+128+256)
    expected = 128 + 8192 + 32768 + 131072 + 8192 + 2 * (64 + 128 + 256)
    assert parameters(make_encoder(1)) == expected == 181248


def test_the_study_projection_is_its_last_convolution_reading_the_256_x_3_x_3_map():
    encoder = make_encoder(1)
    assert encoder.backbone(torch.zeros(2, 1, 28, 28)).shape == (2, 256, 3, 3)
    assert parameters(encoder.projection) == 256 * 8 * 4


def test_the_study_arch_is_initialised_exactly_as_before_it_had_a_backbone_and_a_projection():
    # numbers from the single nn.Sequential of the code before `model.arch` (e1c4695), seed 0, MNIST: the same
    # weights, so every earlier result of the 12 scenarios stays comparable. Relative bounds: torch's uniform fill
    # rounds its last bits by CPU (without FMA the sum moves by 8e-11 of itself); another initialisation moves it
    # by O(1)
    torch.manual_seed(0)
    encoder = make_encoder(1)
    with torch.no_grad():
        assert sum(float(p.double().abs().sum()) for p in encoder.parameters()) == pytest.approx(
            4888.121801165198, rel=1e-9
        )
        assert float(encoder.backbone[0].weight[0, 0, 0, 0]) == pytest.approx(-0.003743410110473633, rel=1e-6)
        assert float(encoder.projection[0].weight[7, 255, 1, 1]) == pytest.approx(0.004430752247571945, rel=1e-6)


@pytest.mark.parametrize("height, width", [(5, 5), (8, 8), (15, 9)])  # the study's map sizes, odd and even
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_matmul_backward_convolution_has_the_gradients_of_conv2d(height, width, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 3, height, width, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, height // 2 + 1, width // 2 + 1, 4, dtype=torch.float64).permute(0, 3, 1, 2)  # not contiguous
    ours = torch.autograd.grad(_MatmulBackwardConv.apply(x, weight), (x, weight), grad)
    conv2d = torch.autograd.grad(F.conv2d(x, weight, stride=2, padding=1), (x, weight), grad)
    for a, b in zip(ours, conv2d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_MatmulBackwardConv.apply, (x[:1, :2], weight[:2, :2]))


def oneDNN_encoder(channels: int) -> torch.nn.Module:
    """The study encoder with conv2d's own backward in its strided layers: what the fast path must match."""
    encoder = make_encoder(channels)
    for layer in encoder.modules():
        if isinstance(layer, StridedConv2x2):
            layer.matmul_backward = False
    return encoder


def gradients(encoder: torch.nn.Module, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, dict]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = encoder(x)
    y.float().pow(2).sum().backward()
    return y.float(), {name: p.grad for name, p in encoder.named_parameters()}


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_the_study_encoder_under_bf16_autocast_is_as_close_to_fp32_as_conv2d_in_bf16(channels, size):
    torch.manual_seed(0)
    x = torch.randn(64, channels, size, size).contiguous(memory_format=torch.channels_last)
    runs = {}
    for name, bf16 in [("fast", True), ("oneDNN", True), ("fp32", False)]:
        torch.manual_seed(1)
        encoder = make_encoder(channels) if name == "fast" else oneDNN_encoder(channels)
        runs[name] = gradients(encoder.to(memory_format=torch.channels_last), x, bf16)
    assert torch.equal(runs["fast"][0], runs["oneDNN"][0])  # the same forward pass
    for name, exact in runs["fp32"][1].items():

        def error(run, name=name, exact=exact):
            return float((runs[run][1][name] - exact).norm() / exact.norm())

        assert error("fast") <= 1.05 * error("oneDNN") + 1e-3, name  # bf16's own error, not more
        assert error("fast") < 0.1, name


def test_the_strided_convolution_outside_bf16_autocast_is_conv2d_itself():
    torch.manual_seed(0)
    layer = StridedConv2x2(64, 8)
    x = torch.randn(2, 64, 9, 9)
    assert torch.equal(layer(x), F.conv2d(x, layer.weight, stride=2, padding=1))
    assert [name for name, _ in layer.named_parameters()] == ["weight"]

    def takes_matmul_backward() -> bool:
        return isinstance(layer(x).grad_fn, _MatmulBackwardConv._backward_cls)

    assert not takes_matmul_backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert takes_matmul_backward()
        layer.matmul_backward = False
        assert not takes_matmul_backward()


def test_only_the_layers_from_64_input_channels_take_the_matmul_backward():
    for channels in (1, 3):
        layers = [m for m in make_encoder(channels).modules() if isinstance(m, StridedConv2x2)]
        assert [layer.matmul_backward for layer in layers] == [False, False, True, True]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_in_place_activations_give_the_gradients_of_out_of_place_ones(arch):
    def gradients_with(inplace: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        encoder = make_encoder(3, arch=arch, embedding_dim=ARCHS[arch].embedding_dim or 32)
        activations = [m for m in encoder.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
        assert activations and all(m.inplace for m in activations)
        for m in activations:
            m.inplace = inplace
        encoder(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))).pow(2).sum().backward()
        return [p.grad for p in encoder.parameters() if p.requires_grad]  # not the frozen patch whitening

    assert all(torch.equal(a, b) for a, b in zip(gradients_with(True), gradients_with(False), strict=True))


def test_vgg_small_parameter_count_by_hand():
    convs = 1 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9 + 128 * 256 * 9
    batchnorms = 2 * (32 + 64 + 128 + 256) + 2 * 256
    projection = 256 * 256 + 256 * 64 + 64  # Linear without bias (BatchNorm follows), Linear to the embedding
    assert parameters(make_encoder(1, arch="vgg_small", embedding_dim=64)) == convs + batchnorms + projection == 470816


def test_airbench_parameter_count_by_hand():
    whitening = 3 * 24 * 4 + 24  # 2x2 filters, 2 x 12 of them for 3 channels, and their (zero) bias
    convs = 9 * (24 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256)
    batchnorms = 2 * 2 * (64 + 128 + 256) + 2 * 256
    projection = 256 * 256 + 256 * 64 + 64
    assert parameters(make_encoder(3, arch="airbench", embedding_dim=64)) == whitening + convs + batchnorms + projection


def test_patch_whitening_gives_patches_of_unit_covariance_and_their_negatives():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=generator)  # correlated pixels and channels
    patches = torch.randn(4000, 12, generator=generator) @ mixing * 10
    images = F.fold(patches.reshape(1000, 4, 12).transpose(1, 2), (4, 4), 2, stride=2)  # 2x2 patches back to 4x4 images
    layer = PatchWhitening(3)
    layer.fit(images)
    out = layer(images)  # every 2x2 window, as fitted
    first, second = out[:, :12], out[:, 12:]
    assert torch.equal(second, -first)
    whitened = first.permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = torch.cov(whitened.T)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_every_arch_gives_256_backbone_features_and_its_embedding_from_one_pass(arch, channels, size):
    dim = ARCHS[arch].embedding_dim or 48
    encoder = make_encoder(channels, arch=arch, embedding_dim=dim).eval()
    x = torch.randn(5, channels, size, size)
    both = encoder.embed(x)
    assert both["backbone"].shape == (5, 256) and both["embedding"].shape == (5, dim)
    assert torch.equal(both["embedding"], encoder(x))
    hidden = encoder.backbone(x)
    pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden  # the backbone's map averaged over positions
    assert torch.equal(both["backbone"], pooled)


def test_embeddings_lie_in_the_sigmoid_range():
    out = make_encoder(3)(torch.randn(8, 3, 32, 32))
    assert out.min() >= 0 and out.max() <= 1


def test_embed_images_uses_eval_mode_so_results_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    encoder = make_encoder(1)
    encoder.train()
    encoder(torch.randn(64, 1, 28, 28))  # move BatchNorm running statistics away from defaults
    images = np.random.default_rng(0).integers(0, 256, (10, 1, 28, 28), dtype=np.uint8)
    whole = embed_images(encoder, images, batch_size=10)
    one_by_one = embed_images(encoder, images, batch_size=1)  # batch statistics of 1 image would differ
    assert not encoder.training
    assert whole.keys() == one_by_one.keys() == {"embedding", "backbone"}
    for name in whole:
        np.testing.assert_allclose(whole[name], one_by_one[name], atol=1e-5)


def test_l2_head_keeps_the_weights_and_gives_unit_vectors_that_can_point_apart():
    sigmoid, l2 = make_encoder(1), make_encoder(1, head="l2")
    assert sigmoid.state_dict().keys() == l2.state_dict().keys()  # a checkpoint fits either head
    out = l2.eval()(torch.randn(16, 1, 28, 28))
    assert torch.allclose(out.norm(dim=1), torch.ones(16), atol=1e-5)
    assert out.min() < 0  # unlike sigmoid outputs, components can be negative, so a cosine can be too


@pytest.mark.parametrize("arch", list(ARCHS))
def test_saved_encoder_loads_back_with_the_same_outputs(arch, tmp_path):
    design = {"channels": 3, "head": "l2", "arch": arch, "embedding_dim": ARCHS[arch].embedding_dim or 16}
    encoder = make_encoder(**design).eval()
    save_encoder(encoder, design, tmp_path / "encoder.pt")
    loaded = load_encoder(tmp_path / "encoder.pt", torch.device("cpu")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), encoder(x))


def test_the_weights_digest_covers_name_dtype_shape_and_bytes_in_name_order():
    state = {"b": torch.tensor([1, 2], dtype=torch.int16), "a": torch.tensor(3.0)}
    by_hand = b"a\0torch.float32\0()\0" + struct.pack("<f", 3.0) + b"b\0torch.int16\0(2,)\0" + b"\x01\x00\x02\x00"
    assert weights_digest(state) == hashlib.sha256(by_hand).hexdigest()
    assert weights_digest({"a": torch.tensor([3.0]), "b": state["b"]}) != weights_digest(state)  # shape (1,), not ()


def test_the_saved_file_keeps_its_keys_and_adds_the_digest(tmp_path):
    encoder = make_encoder(1)
    save_encoder(encoder, {"channels": 1}, tmp_path / "encoder.pt")
    saved = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert list(saved) == ["state_dict", "design", "weights_sha256"]
    assert list(saved["state_dict"]) == list(encoder.state_dict())
    assert saved["weights_sha256"] == weights_digest(encoder.state_dict())


def test_an_encoder_saved_before_the_digest_still_loads(tmp_path):
    encoder = make_encoder(1).eval()
    torch.save({"state_dict": encoder.state_dict(), "design": {"channels": 1}}, tmp_path / "encoder.pt")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(load_encoder(tmp_path / "encoder.pt", torch.device("cpu")).eval()(x), encoder(x))


def test_bytes_flipped_inside_the_weights_are_caught(tmp_path):
    path = tmp_path / "encoder.pt"
    encoder = make_encoder(1)
    save_encoder(encoder, {"channels": 1}, path)
    raw = bytearray(path.read_bytes())
    at = raw.find(encoder.projection[0].weight.detach().numpy().tobytes())  # the last convolution's weights
    raw[at + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert not torch.equal(
        torch.load(path, weights_only=True)["state_dict"]["projection.0.weight"], encoder.projection[0].weight
    )  # torch itself loads the damage silently
    with pytest.raises(FileError) as caught:
        load_encoder(path, torch.device("cpu"))
    assert str(caught.value) == (
        f"{path} is damaged: its weights do not match the digest saved with them; delete it and run `dvc repro` to "
        "recompute it"
    )


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_encoder_file_that_would_run_code_is_refused_unrun(tmp_path):
    path, marker = tmp_path / "encoder.pt", tmp_path / "code-ran"
    torch.save(
        {"state_dict": make_encoder(1).state_dict(), "design": {"channels": 1}, "extra": RunsCodeWhenUnpickled(marker)},
        path,
    )
    with pytest.raises(FileError) as caught:
        load_encoder(path, torch.device("cpu"))
    assert str(caught.value) == (
        f"{path} holds something other than plain weights (it refers to {os.system.__module__}.system): it was "
        "refused and nothing in it was run; delete it and run `dvc repro` to recompute it"
    )
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what torch's own message suggests: it runs the payload
    assert marker.exists()


def test_a_garbled_pickle_is_refused_in_one_line_without_torchs_advice(tmp_path):
    path = tmp_path / "encoder.pt"
    save_encoder(make_encoder(1), {"channels": 1}, path)
    raw = path.read_bytes()
    at = raw.index(b"X\n\x00\x00\x00state_dict")  # in data.pkl: opcode BINUNICODE, length 10, the first key
    path.write_bytes(raw[:at] + b"\xff" + raw[at + 1 :])  # 0xff: no pickle opcode
    with pytest.raises(FileError) as caught:
        load_encoder(path, torch.device("cpu"))
    assert str(caught.value) == (
        f"{path} holds something other than plain weights (a pickle torch's safe loader does not accept): it was "
        "refused and nothing in it was run; delete it and run `dvc repro` to recompute it"
    )
