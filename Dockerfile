# The gateway image: slim, non-root. Mount a config at /etc/gateway/config.yaml and
# the upstream password as a file or pass it through an environment variable.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 9092 8080
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["run", "--config", "/etc/gateway/config.yaml"]
