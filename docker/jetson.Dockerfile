# A Jetson (JetPack 6, L4T r36.4) as a remote target of compress: an SSH server with Python 3 and
# numpy beside JetPack's TensorRT (trtexec at /usr/src/tensorrt/bin/trtexec). The device only
# measures: compress copies the models and its measuring program over SSH, so neither compress nor
# torch is installed here. For an ONNX Runtime target, add a Jetson build of onnxruntime-gpu.
# Build and run on the device:
#   docker build -f docker/jetson.Dockerfile -t compress-jetson \
#       --build-arg AUTHORIZED_KEY="$(cat ~/.ssh/id_ed25519.pub)" .
#   docker run -d --runtime nvidia --restart unless-stopped -p 2222:22 --name compress-jetson compress-jetson
# then point a target at it:
#   host: {address: <device>, port: 2222, user: compress, python: /usr/bin/python3}
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

ARG SSH_USER=compress
# The public key (one authorized_keys line) of the machine that runs `compress`.
ARG AUTHORIZED_KEY

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openssh-server python3 python3-numpy \
    && rm -rf /var/lib/apt/lists/*

RUN test -n "$AUTHORIZED_KEY" || { echo "build with --build-arg AUTHORIZED_KEY=\"\$(cat ~/.ssh/id_ed25519.pub)\"" >&2; exit 1; } \
    && useradd --create-home --shell /bin/bash --groups video "$SSH_USER" \
    && install -d -m 700 -o "$SSH_USER" -g "$SSH_USER" "/home/$SSH_USER/.ssh" \
    && echo "$AUTHORIZED_KEY" > "/home/$SSH_USER/.ssh/authorized_keys" \
    && chown "$SSH_USER:$SSH_USER" "/home/$SSH_USER/.ssh/authorized_keys" \
    && chmod 600 "/home/$SSH_USER/.ssh/authorized_keys" \
    && printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n' \
        > /etc/ssh/sshd_config.d/compress.conf \
    && ssh-keygen -A \
    && mkdir -p /run/sshd

# The host keys are made when the image is built (ssh-keygen -A), so the device's entry in
# known_hosts stays valid across container restarts; it changes when the image is rebuilt.
EXPOSE 22
CMD ["/usr/sbin/sshd", "-D", "-e"]
