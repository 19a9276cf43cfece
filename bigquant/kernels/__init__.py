"""Small numpy kernels the stages are built on, with no dask in them.

``color``
    Colour spaces (sRGB, OKLab, CIELAB) and the ΔE colour difference.
``nearest``
    The nearest codebook colour of pixels: direct distances, k-d tree, colour table.
``dither``
    Ordered (Bayer) and Floyd–Steinberg dithering of a block before its colours are chosen.
``downsample``
    Shrinking labels for reduced levels: which output uses which rule, and why.
``png``
    PNG files of label tiles (indexed, RGB or RGBA), encoded with libdeflate.
``convert``
    Stored TIFF values to the colours bigquant quantizes (CMYK, Lab, palettes, …).
"""
