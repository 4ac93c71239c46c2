# dicom-node on a CUDA runtime: onnxruntime-gpu uses the GPU when the container gets one
# (docker run --gpus all …) and falls back to the CPU otherwise; the providers actually
# in use are logged at start (event model.loaded, providers_in_use). onnxruntime-gpu 1.31
# needs CUDA 13 and cuDNN 9, which this base image provides.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /srv/dicom-node dicomnode

WORKDIR /srv/dicom-node
COPY pyproject.toml setup.cfg README.md ./
COPY dicom_node dicom_node
COPY inference inference
COPY storage storage
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install .

COPY config.yaml ./
COPY models models
RUN mkdir -p var && chown dicomnode var
USER dicomnode

# var/ holds the database, the spool and the signing key: keep it on a volume.
VOLUME ["/srv/dicom-node/var"]
EXPOSE 11112
ENTRYPOINT ["/opt/venv/bin/dicom-node", "--config", "/srv/dicom-node/config.yaml"]
CMD ["serve"]
