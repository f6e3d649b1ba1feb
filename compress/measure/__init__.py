"""Measurement of deployable files on targets: jobs run here or over SSH, the environment they ran
in, and `compress profile`. Torch-free."""
