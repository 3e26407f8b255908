"""jaxcv.predict.transform against torchvision's GeneralizedRCNNTransform (eval): resized sizes
(including torchvision's truncation), the normalised, resized and padded batch to 1e-5 on
scikit-image's photographs, boxes back to the original size, and bad inputs."""

import struct
import zlib

import numpy as np
import pytest
import skimage.data

from jaxcv.predict import transform

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection.transform import (  # noqa: E402
    GeneralizedRCNNTransform,
    resize_boxes,
)

pytestmark = pytest.mark.parity


def _torch_batch(images, min_size, max_size):
    t = GeneralizedRCNNTransform(
        min_size, max_size, transform.IMAGENET_MEAN, transform.IMAGENET_STD
    )
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    with torch.no_grad():
        out, _ = t.eval()(tensors)
    return out.tensors.permute(0, 2, 3, 1).numpy(), np.array(out.image_sizes)


@pytest.mark.parametrize(
    ("height", "width", "min_size", "max_size"),
    [(600, 450, 800, 1333), (400, 600, 800, 1333), (161, 214, 800, 1333), (333, 517, 800, 1333),
     (1000, 90, 800, 1333), (512, 512, 160, 224), (427, 640, 97, 1000), (7, 5, 800, 1333)],
)  # fmt: skip
def test_resized_size_is_torchvision_s(height, width, min_size, max_size):
    x = torch.zeros(1, 1, height, width)
    factor = min(min_size / min(height, width), max_size / max(height, width))
    expected = torch.nn.functional.interpolate(
        x, scale_factor=factor, mode="bilinear", recompute_scale_factor=True, align_corners=False
    ).shape[-2:]
    assert transform.resized_size(height, width, min_size, max_size) == tuple(expected)
    if (height, width) == (161, 214):  # 800 / 161 * 161 < 800 in double: torchvision's 799
        assert tuple(expected) == (799, 1063)


@pytest.mark.parametrize(("min_size", "max_size"), [(800, 1333), (160, 224), (97, 1000)])
def test_batch_matches_torchvision(min_size, max_size):
    rng = np.random.default_rng(0)
    images = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        rng.integers(0, 256, (133, 251, 3), dtype=np.uint8),
    ]
    expected, expected_sizes = _torch_batch(images, min_size, max_size)
    batch, sizes = transform.transform_images(images, min_size, max_size)
    assert batch.dtype == np.float32 and sizes.dtype == np.int32
    np.testing.assert_array_equal(sizes, expected_sizes)
    assert batch.shape == expected.shape and batch.shape[1] % 32 == batch.shape[2] % 32 == 0
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-5)
    # float images in [0, 1] are taken as torchvision takes them
    floats = [im.astype(np.float64) / 255 for im in images]
    np.testing.assert_allclose(
        transform.transform_images(floats, min_size, max_size)[0], expected, rtol=0, atol=1e-5
    )


def test_boxes_back_to_the_original_size():
    boxes = np.array([[1.5, 2.25, 100.0, 77.7], [0.0, 0.0, 799.0, 1066.0]], np.float32)
    expected = resize_boxes(torch.from_numpy(boxes), [1066, 799], [600, 450]).numpy()
    actual = transform.boxes_to_original(boxes, (1066, 799), (600, 450))
    np.testing.assert_array_equal(actual, expected)


def test_fixed_canvas_and_bad_inputs(tmp_path):
    image = np.zeros((50, 70, 3), np.uint8)
    batch, sizes = transform.transform_images([image], 64, 96, canvas=(96, 128))
    assert batch.shape == (1, 96, 128, 3) and sizes.tolist() == [[64, 89]]
    assert np.all(batch[0, 64:] == 0) and np.all(batch[0, :, 89:] == 0)
    with pytest.raises(ValueError, match=r"canvas \(32, 128\) is smaller than a resized image"):
        transform.transform_images([image], 64, 96, canvas=(32, 128))
    with pytest.raises(ValueError, match="must be a multiple of size_divisible=32"):
        transform.transform_images([image], 64, 96, canvas=(100, 128))
    with pytest.raises(ValueError, match=r"images\[1\] must have shape \(H, W, 3\).*\(3, 50, 70\)"):
        transform.transform_images([image, image.transpose(2, 0, 1)])
    with pytest.raises(ValueError, match=r"images\[0\] must be uint8 pixels or floats.*int32"):
        transform.transform_images([image.astype(np.int32)])
    with pytest.raises(ValueError, match="needs at least one image"):
        transform.transform_images([])
    with pytest.raises(ValueError, match="image size must be positive"):
        transform.resized_size(0, 5)
    with pytest.raises(ValueError, match=r"cannot read image .*nope\.png: No such file"):
        transform.read_image(tmp_path / "nope.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.txt: cannot identify"):
        transform.read_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"cannot read image .*: is a directory"):
        transform.read_image(tmp_path)

    # A PNG header claiming 15000 x 15000 pixels: refused before decoding (decompression bomb).
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png: Image size \(225000000"):
        transform.read_image(tmp_path / "bomb.png")
    from PIL import Image

    Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "gray.png")
    rgb = transform.read_image(tmp_path / "gray.png")
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8 and np.all(rgb == 200)
