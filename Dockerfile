# syntax=docker/dockerfile:1
# The sweep runner image: the same image runs the runner Job, the Dask scheduler and
# the Dask workers. Extend it with your simulation code:
#
#   FROM sweep-runner:0.1.0
#   COPY --chown=10001:10001 mysim/ /app/mysim/
#   RUN pip install --no-cache-dir -r /app/mysim/requirements.txt
#
# Build: docker build -t sweep-runner:0.1.0 .   (or: make image)

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
ARG EXTRAS=kubernetes
# bokeh serves the Dask dashboard (kubectl port-forward svc/<cluster>-scheduler 8787)
ARG EXTRA_PACKAGES="bokeh>=3.1"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/sweep

# a numeric, non-root user: Kubernetes can check runAsNonRoot against it
RUN groupadd --system --gid 10001 sweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/sweep --create-home \
      --shell /usr/sbin/nologin sweep

COPY --from=build /dist/ /tmp/dist/
RUN wheel="$(ls /tmp/dist/sweep_runner-*.whl)" \
 && python -m pip install "${wheel}[${EXTRAS}]" ${EXTRA_PACKAGES} \
 && rm -rf /tmp/dist \
 && sweep --help > /dev/null \
 && dask --version

# the examples make `sweep submit examples/pi.yaml -o s3://...` work out of the box
WORKDIR /app
COPY --chown=10001:10001 examples ./examples

USER 10001:10001
EXPOSE 8786 8787 8788
ENTRYPOINT ["sweep"]
CMD ["--help"]
