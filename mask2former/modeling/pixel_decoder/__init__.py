from .fpn import BasePixelDecoder
from .msdeformattn import MSDeformAttnPixelDecoder
from .registry import PIXEL_DECODER_REGISTRY, build_pixel_decoder
