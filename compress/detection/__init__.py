"""Object detection: the task, the detector interface its models implement, boxes and the mAP metric."""
