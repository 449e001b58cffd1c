# syntax=docker/dockerfile:1
# detbench: the template of every image. An image is a set of build arguments, one file per image under
# docker/images/ (DETBENCH_CUDA, BASE_IMAGE, TORCH_VERSION, TORCHVISION_VERSION). From this file and each of
# those, `python scripts/sync_dockerfiles.py` writes Dockerfile.<image>: this file with that image's values as
# the ARG defaults and its own header in place of this comment. Edit this file and docker/images/, never a
# Dockerfile.<image>, then rerun the script (tests/test_dockerfiles.py fails while one is stale). The image
# workflow and compose build this file with the image's build arguments; the generated files need none:
#
#   docker build -f Dockerfile.cu121 -t detbench:cu121 .                  # an image: its generated file
#   docker build -t detbench:cu128 .                                      # this file's defaults: cu128.env's
#   docker build --target dev -t detbench:cu128-dev .                     # + JupyterLab (token required)
#   docker run --rm --gpus all --shm-size=8g -v "$PWD/results:/results" detbench:cu128
#
# The build fails when the base's torch is not built for DETBENCH_CUDA's CUDA, or (when given) is not
# TORCH_VERSION / TORCHVISION_VERSION (docker/check-base.py). Minimum host drivers: docs/containers.md.
# The base is pinned by tag; for a reproducible build pin its digest too:
#   --build-arg BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime@sha256:<digest>
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

# ---- base: the base image's torch, detbench and its pinned dependencies, a non-root user -------------------------
FROM ${BASE_IMAGE} AS base

ARG BASE_IMAGE
# The image's CUDA tag; it names the image (results record it as DETBENCH_IMAGE) and must match the base.
ARG DETBENCH_CUDA=cu128
# The torch/torchvision release the base must ship (empty: not checked); the workflow and compose pass them,
# the generated Dockerfile.<image> has them as defaults.
ARG TORCH_VERSION=
ARG TORCHVISION_VERSION=
ARG IMAGE_NAME=detbench:${DETBENCH_CUDA}
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG DETBENCH_UID=1000

LABEL org.opencontainers.image.title="detbench" \
      org.opencontainers.image.description="PyTorch object-detection benchmarks and preflight (${IMAGE_NAME})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.ref.name="${IMAGE_NAME}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# DETBENCH_IMAGE is recorded in every result's environment fingerprint (envcheck/fingerprint.py).
ENV DETBENCH_IMAGE=${IMAGE_NAME} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# torch.compile (inductor/triton) needs a C compiler at run time; the runtime base images ship none.
# Versions are not pinned: the base's Ubuntu release fixes them, and its archive drops superseded versions,
# so a pin would only break future builds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# Ubuntu 24.04 bases carry a user 'ubuntu' with the default uid: free the uid for ours.
RUN if [ "${DETBENCH_UID}" -eq 0 ]; then echo "DETBENCH_UID must not be 0: the image runs as non-root" >&2; exit 1; fi \
 && if getent passwd "${DETBENCH_UID}" >/dev/null; then userdel "$(getent passwd "${DETBENCH_UID}" | cut -d: -f1)"; fi \
 && useradd --uid "${DETBENCH_UID}" --user-group --create-home --shell /bin/bash detbench \
 && install -d -o detbench -g detbench /results /opt/detbench

WORKDIR /opt/detbench

# Dependencies first (their layer survives source edits). The base must be the line the build arguments name;
# the constraints file pins the base's torch, torchvision, numpy and CUDA wheels exactly, so pip cannot swap
# the base's torch build.
COPY --chown=detbench:detbench docker/ ./docker/
RUN python docker/check-base.py --cuda-tag "${DETBENCH_CUDA}" --torch "${TORCH_VERSION}" \
        --torchvision "${TORCHVISION_VERSION}" \
 && python docker/base-constraints.py > docker/base-constraints.txt \
 && cat docker/base-constraints.txt \
 && python -m pip install --no-cache-dir -c docker/base-constraints.txt -r docker/requirements.txt

COPY --chown=detbench:detbench pyproject.toml README.md ./
COPY --chown=detbench:detbench envcheck/ ./envcheck/
COPY --chown=detbench:detbench bench/ ./bench/
COPY --chown=detbench:detbench reports/ ./reports/
# the one importable name: links to the three folders above (pyproject.toml)
COPY --chown=detbench:detbench detbench/ ./detbench/
# --no-deps: every dependency is installed above with pins; the diff proves the base's stack is unchanged.
RUN python -m pip install --no-cache-dir --no-deps . \
 && python docker/base-constraints.py | diff -u docker/base-constraints.txt - \
 && python -c "import detbench.envcheck, detbench.bench, detbench.reports, torch, torchvision, pytest_benchmark, pynvml, pandas, matplotlib, rich" \
 && envcheck --help >/dev/null \
 && chmod 0755 docker/*.sh \
 && chown -R detbench:detbench /opt/detbench

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER ${DETBENCH_UID}
VOLUME ["/results"]
HEALTHCHECK --interval=5m --timeout=2m --start-period=1m --retries=3 CMD ["/opt/detbench/docker/healthcheck.sh"]
ENTRYPOINT ["/opt/detbench/docker/entrypoint.sh"]
CMD ["pytest", "bench/", "--benchmark-json=/results/run.json"]

# ---- dev: JupyterLab on top, for exploring results; the entrypoint requires a token ------------------------------
FROM base AS dev

ARG DETBENCH_UID=1000
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
USER 0
RUN python -m pip install --no-cache-dir -c docker/base-constraints.txt -r docker/requirements-dev.txt \
 && python docker/base-constraints.py | diff -u docker/base-constraints.txt -
USER ${DETBENCH_UID}
EXPOSE 8888
ENTRYPOINT ["/opt/detbench/docker/jupyter.sh"]
CMD []

# ---- runtime: the default target, the benchmark image -----------------------------------------------------------
FROM base AS runtime
