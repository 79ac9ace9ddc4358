from .fpn import BasePixelDecoder, TransformerEncoderPixelDecoder, build_pixel_decoder
from .msdeformattn import MSDeformAttnPixelDecoder
