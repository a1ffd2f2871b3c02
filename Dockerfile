# syntax=docker/dockerfile:1
# The sweep runner image: the same image runs the runner Job, the Dask scheduler and
# the Dask workers. Extend it with your simulation code:
#
#   FROM sweep-runner:0.1.0
#   COPY --chown=10001:10001 mysim/ /app/mysim/
#   RUN pip install --no-cache-dir -r /app/mysim/requirements.txt
#
# Build: make image (docker or podman, whichever is installed), or
#        docker build -t sweep-runner:0.1.0 .
# Any Debian-based Python 3.11+ image with pip can be the base: --build-arg PYTHON_IMAGE=...

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build: the wheel
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m pip install "build>=1.2"
COPY pyproject.toml README.md ./
COPY runner ./runner
RUN python -m build --wheel --outdir /dist

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# HOME and Dask's scratch space are where the pods mount writable volumes: the root
# filesystem is read-only there (readOnlyRootFilesystem) and /tmp is an emptyDir
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/sweep \
    DASK_TEMPORARY_DIRECTORY=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

# a numeric, non-root user: Kubernetes can check runAsNonRoot against it
RUN groupadd --system --gid 10001 sweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/sweep --create-home \
      --shell /usr/sbin/nologin sweep

# The dependencies, pinned, in their own layer: a change under runner/ does not
# reinstall them. An old pip (24.0 in python:3.11-slim) backtracks for over ten
# minutes through botocore releases without the lock, so pip is upgraded first.
# image-requirements.txt is generated from pyproject.toml: make lock
COPY image-requirements.txt /tmp/image-requirements.txt
RUN python -m pip install --upgrade "pip>=25" \
 && python -m pip install -r /tmp/image-requirements.txt \
 && rm /tmp/image-requirements.txt

COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install --no-deps /tmp/dist/sweep_runner-*.whl \
 && rm -rf /tmp/dist \
 && python -m pip check \
 && sweep --help > /dev/null \
 && dask --version

# the examples make `sweep submit examples/pi.yaml -o s3://...` work out of the box
WORKDIR /app
COPY --chown=10001:10001 examples ./examples

USER 10001:10001
EXPOSE 8786 8787 8788
ENTRYPOINT ["sweep"]
CMD ["--help"]
