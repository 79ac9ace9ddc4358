"""Memory helpers of the video model: detectron2's, under the original module path."""
from detectron2.utils.memory import retry_if_cuda_oom

__all__ = ["retry_if_cuda_oom"]
