"""
The original implementation's ``utils.misc`` names: a batch of padded images with its padding
mask, and whether torch.distributed is in use.
"""

from typing import List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from detectron2.structures import ImageList

__all__ = ["NestedTensor", "is_dist_avail_and_initialized", "nested_tensor_from_tensor_list"]


class NestedTensor:
    """A padded batch ``tensors`` (B, C, H, W) and its ``mask`` (B, H, W) bool, True on padding."""

    def __init__(self, tensors: torch.Tensor, mask: Optional[torch.Tensor]):
        self.tensors = tensors
        self.mask = mask

    def to(self, device: Union[str, torch.device]) -> "NestedTensor":
        mask = None if self.mask is None else self.mask.to(device)
        return NestedTensor(self.tensors.to(device), mask)

    def decompose(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.tensors, self.mask

    def __repr__(self) -> str:
        return str(self.tensors)


def nested_tensor_from_tensor_list(tensor_list: List[torch.Tensor]) -> NestedTensor:
    """
    Pads (C, H_i, W_i) tensors with zeros on the bottom/right to the largest H and W
    (detectron2's ImageList) and marks the padding.

    Returns:
        NestedTensor with tensors (B, C, H, W) and mask (B, H, W) bool, True where padded.
    """
    if not tensor_list:
        raise ValueError("nested_tensor_from_tensor_list: got an empty list")
    for i, t in enumerate(tensor_list):
        if t.dim() != 3:
            raise ValueError(
                f"nested_tensor_from_tensor_list: tensor {i} has shape {tuple(t.shape)}; "
                "each must be (C, H, W)"
            )
    images = ImageList.from_tensors(tensor_list)
    batch = images.tensor
    mask = torch.ones((batch.shape[0], *batch.shape[-2:]), dtype=torch.bool, device=batch.device)
    for m, (h, w) in zip(mask, images.image_sizes):
        m[:h, :w] = False
    return NestedTensor(batch, mask)


def is_dist_avail_and_initialized() -> bool:
    """Whether torch.distributed is built in and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()
