# CPU image of compress: ONNX Runtime and OpenVINO targets, CPU-only PyTorch, the versions in
# requirements-dev.txt (the set the tests run with).
#   docker build -t compress-edge .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" compress-edge run recipes/quickstart.yaml
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
COPY requirements-dev.txt ./
# CPU wheels of torch first, so the package's own install finds it and skips the CUDA build.
RUN pip install -c requirements-dev.txt torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY compress compress
COPY targets targets
RUN pip install -c requirements-dev.txt ".[openvino]" && rm -rf /src

WORKDIR /work
ENTRYPOINT ["compress"]
CMD ["--help"]
