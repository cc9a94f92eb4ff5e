# The clickrec image: the `clickrec` command line with everything it runs
# (the Spark streaming and batch jobs, the API). compose.yaml builds it for the
# stream, api and demo services; on its own:
#
#   docker build -t clickrec:0.1.0 .
#   docker run --rm clickrec:0.1.0 --help
#
# Configuration comes from environment variables named after the fields of
# feature_store/settings.py (see .env.example); compose.yaml sets them.

FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spark runs on a JVM: Debian's OpenJDK 17 runtime is enough (no Java compiler).
# procps gives `ps`, which Spark's launch scripts call. gcc compiles the ranker's
# trees to C when the API loads them (API_COMPILED_DIR; without it, XGBoost scores). The mkdir works around
# JDK packages that expect man directories the slim image removed.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17
ENV JAVA_HOME=/usr/lib/jvm/java-17
# Spark's Python workers must use the same interpreter as the driver.
ENV PYSPARK_PYTHON=/usr/local/bin/python

# Dependencies first, from pyproject.toml alone, so that editing the code does
# not reinstall them (pyspark builds from source and takes minutes).
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the project itself (.dockerignore keeps .venv, data, .git and caches out).
WORKDIR /app
COPY . /app
RUN pip install . \
    && rm -rf /app/build /app/*.egg-info

# Run as an unprivileged user; /data (DATA_DIR in compose) is its writable state.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin clickrec \
    && mkdir -p /data \
    && chown clickrec:clickrec /data
USER clickrec

EXPOSE 8000
ENTRYPOINT ["clickrec"]
CMD ["--help"]
