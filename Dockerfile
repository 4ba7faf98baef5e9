# The gapsweep worker image. CPU by default; GPU workers build with --build-arg EXTRAS=gpu
# (tensorflow[and-cuda]) and run with the NVIDIA container runtime.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gapsweep ./gapsweep
COPY sweeps ./sweeps
COPY search_spaces ./search_spaces
COPY storage ./storage
COPY examples ./examples
COPY scripts ./scripts
RUN PIP_NO_CACHE_DIR=1 scripts/setup.sh "$EXTRAS"
ENV PATH=/app/.venv/bin:$PATH
# Stop with SIGTERM: the worker finishes its current trial, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gapsweep"]
CMD ["--help"]
