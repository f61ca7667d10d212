"""What the default report of LeNet-5 on the digits writes (`jaxcnn.viz.report`)."""

# The figures in the order written; figure -> (minimum width, minimum height) in pixels.
DEFAULT_REPORT = {
    "filters.png": (400, 100),
    "filters_conv2.png": (400, 150),
    "top_patches_conv1.png": (500, 400),
    "top_patches_conv2.png": (500, 400),
    "top_patches_fc1.png": (500, 400),
    "feature_maps_conv1.png": (400, 100),
    "attributions.png": (900, 600),
}
