# rill worker image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 rill
COPY --from=build /install /usr/local
USER rill
ENV RILL_METRICS_PORT=9400 PYTHONUNBUFFERED=1
EXPOSE 9400
ENTRYPOINT ["rill"]
CMD ["run"]
