"""Concepts from a segmentation model: a folder of images -> a Broden-format dataset.

    from netdissect.data.segment import segment_images, load_segmenter
    segment_images("photos/", "tv:deeplabv3_resnet50", "photos_broden", colors=True)
    # the same: netdissect.segment(...); on the command line: netdissect segment ...

`segment_images` (writer.py) runs a Segmenter (base.py: `labels()` and `segment(images)`)
over every image of a folder and writes images, label planes and the CSV files of Broden;
`load_segmenter` (specs.py) resolves the specs `toyworld`, `tv:NAME`, `hf:REPO_OR_FOLDER` and
`package.module:callable`; colors.py names colours by the toy world's rule (`--colors`);
toyworld.py is the toy world's own segmenter and train.py trains it.
"""
from netdissect.data.segment.base import PIXEL_CATEGORIES, Segmenter, SegmenterLabel
from netdissect.data.segment.colors import ColorNamer, with_colors
from netdissect.data.segment.specs import SPEC_FORMS, load_segmenter
from netdissect.data.segment.writer import segment_images

#: `netdissect.segment(...)`: the top-level name of segment_images, as `netdissect.dissect`.
segment = segment_images

__all__ = ["segment_images", "segment", "load_segmenter", "Segmenter", "SegmenterLabel",
           "ColorNamer", "with_colors", "PIXEL_CATEGORIES", "SPEC_FORMS"]
