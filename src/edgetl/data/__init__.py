"""Images in, tensors out. numpy + Pillow only (shared with the device runtime)."""

from .folder import ImageFolder, scan_folder, stratified_sample, stratified_split
from .image import IMAGE_EXTENSIONS, decode_image, load_image
from .input_spec import InputSpec

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "InputSpec", "decode_image", "load_image", "scan_folder", "stratified_sample",
           "stratified_split"]
