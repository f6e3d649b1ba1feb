"""The measuring agent: what runs a job on a device, here or over SSH.

Numpy-only and Python 3.8-compatible, since it ships to boards that have nothing but numpy and a
runtime. `python -m compress.agent JOB_FOLDER` runs a job (see job.py).
"""
