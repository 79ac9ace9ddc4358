"""Helpers for drawing predictions with detectron2's Visualizer."""
from detectron2.structures import BitMasks, Instances

__all__ = ["instances_with_mask_boxes"]


def instances_with_mask_boxes(instances: Instances) -> Instances:
    """
    Mask2Former predicts no boxes (its instance ``pred_boxes`` are zeros, as in the reference):
    give the instances their masks' bounding boxes, so that the Visualizer puts labels on the
    objects and the VideoVisualizer can follow instances by box overlap. In place; returned.
    """
    if len(instances) and not instances.pred_boxes.tensor.any():
        instances.pred_boxes = BitMasks(instances.pred_masks > 0.5).get_bounding_boxes()
    return instances
