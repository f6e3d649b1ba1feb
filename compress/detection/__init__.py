"""Object detection: the task, the detector interface its models implement, boxes and the mAP metric."""

# What `model.arch` may name for `task: detection`, in words for error messages (torch-free).
DETECTOR_MODELS = "frcnn, detr, deformable-detr, torchvision:fasterrcnn_* / retinanet_* / fcos_*, or hf: DETR folders"
