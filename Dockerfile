# The image runs what the wheel declares: `streamalloc demo`, `worker`, `service channel-sync`,
# `service routing` and the rest of the CLI. The wheel carries the schemas, the demo's data and
# the Kafka POM (pyproject's force-include); the suite installs the same wheel into a fresh venv
# outside the checkout and runs each of these (tests/integration/test_wheel.py).

# 1. Build the wheel from the sources.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY examples ./examples
COPY deploy/kafka ./deploy/kafka
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# 2. Install only the wheel, with the pinned dependencies, and run as a user without privileges.
FROM python:3.11-slim
COPY requirements/constraints.txt /tmp/constraints.txt
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir -c /tmp/constraints.txt /tmp/dist/streamalloc-*.whl \
    && rm -rf /tmp/dist /tmp/constraints.txt \
    && useradd --create-home --uid 10001 streamalloc \
    && mkdir /state && chown streamalloc /state
USER 10001
WORKDIR /home/streamalloc
ENV STREAMALLOC_STATE_DIR=/state PYTHONUNBUFFERED=1
VOLUME /state
EXPOSE 8000
CMD ["streamalloc", "--help"]
