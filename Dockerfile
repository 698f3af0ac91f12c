FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md requirements/constraints.txt ./
COPY schemas ./schemas
COPY examples ./examples
COPY deploy/kafka ./deploy/kafka
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT []
