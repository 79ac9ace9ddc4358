"""CocoClipDatasetMapper: a COCO instance image as a pseudo-clip of independently augmented frames."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from conftest import H, W, box_mask, frame_pixels
from mask2former_video.data_video import CocoClipDatasetMapper
from mask2former_video.data_video.augmentation import ResizeShortestEdge


def _rle(m):
    return mask_util.encode(np.asfortranarray(m))


@pytest.fixture
def coco_dict(tmp_path):
    path = str(tmp_path / "img.png")
    Image.fromarray(frame_pixels(0)).save(path)
    annos = [
        {"bbox": [2, 2, 6, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3, "iscrowd": 0,
         "segmentation": _rle(box_mask(2, 2, 8, 6))},
        {"bbox": [0, 0, 20, 16], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
         "segmentation": _rle(box_mask(0, 0, 20, 16))},
        {"bbox": [10, 8, 6, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0,
         "segmentation": [[10, 8, 16, 8, 16, 14, 10, 14]]},
    ]
    return {"file_name": path, "height": H, "width": W, "image_id": 77, "annotations": annos}


def test_pseudo_clip_shapes_and_ids(coco_dict):
    np.random.seed(0)
    augs = [ResizeShortestEdge([8, 16, 32], max_size=1000, sample_style="choice")]
    mapper = CocoClipDatasetMapper(True, augmentations=augs, image_format="RGB", sampling_frame_num=3, num_classes=5)
    sizes = set()
    for _ in range(6):
        clip = mapper(dict(coco_dict))
        assert clip["length"] == 3 and clip["frame_idx"] == [0, 1, 2] and clip["video_id"] == 77
        assert clip["file_names"] == [coco_dict["file_name"]] * 3
        for image, inst in zip(clip["image"], clip["instances"]):
            h, w = image.shape[1:]
            sizes.add(h)
            assert inst.image_size == (h, w) and inst.gt_masks.tensor.shape == (2, h, w)
            assert inst.gt_ids.tolist() == [0, 1] and inst.gt_classes.tolist() == [3, 1]  # crowd left out
            scale = h / H
            np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), np.array([2, 2, 8, 6]) * scale, atol=1.01)
    assert len(sizes) > 1  # frames are augmented independently


def test_object_cropped_away_is_absent(coco_dict):
    np.random.seed(0)
    crop = T.CropTransform(0, 0, 9, 7)  # keeps object 0 only
    mapper = CocoClipDatasetMapper(True, augmentations=[T.RandomApply(crop, 1.0)], image_format="RGB",
                                   sampling_frame_num=2)
    clip = mapper(dict(coco_dict))
    for inst in clip["instances"]:
        assert inst.gt_ids.tolist() == [0, -1] and not inst.gt_masks.tensor[1].any()
