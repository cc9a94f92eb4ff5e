"""The one settings model of clickrec.

Every process (the CLI, the native stack runner, the Spark jobs, the API) reads
its configuration from here: environment variables first, then a `.env` file in
the working directory, then the defaults below. Back-ends are chosen by URL
(`redis://`, `s3://`, `file://`), never by a "native or Docker" switch.
`.env.example` documents every variable; a test keeps it and `compose.yaml` in
step with this model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root, so relative defaults work from any working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Configuration of the whole stack; each field maps to one upper-case env var."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- Kafka ---------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port].")
    clicks_topic: str = Field("clicks", description="Topic that carries every click event, keyed by user_id.")
    dlq_topic: str = Field("clicks.dlq", description="Dead-letter topic: rejected input with its reason.")
    topic_partitions: int = Field(3, ge=1, description="Partitions of the clicks topic when clickrec creates it.")

    # --- Redis (online feature store) ----------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Online feature store.")

    # --- Object store (artifacts and lake) -----------------------------------
    s3_endpoint_url: str = Field("http://127.0.0.1:9000", description="S3 API endpoint (MinIO, or moto natively).")
    s3_access_key: str = Field("clickrec", description="S3 access key.")
    s3_secret_key: str = Field("clickrec-secret", description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_bucket: str = Field("clickrec", description="Bucket created by the stack for artifacts.")
    artifacts_url: str = Field(
        f"file://{PROJECT_ROOT / 'data' / 'artifacts'}",
        description="Where versioned artifacts live: file:///path or s3://bucket/prefix.",
    )
    artifact_retention: int = Field(5, ge=1, description="Complete versions kept per artifact kind.")
    lake_url: str = Field(
        f"file://{PROJECT_ROOT / 'data' / 'lake'}", description="Offline store of raw events (Parquet by date)."
    )

    # --- Spark ----------------------------------------------------------------
    spark_master: str = Field("local[*]", description="Spark master URL; local[*] runs in-process on every core.")
    spark_driver_memory: str = Field("4g", description="Spark driver memory (local mode: all of Spark's memory).")
    spark_shuffle_partitions: int = Field(4, ge=1, description="Shuffle partitions; small suits one machine.")
    checkpoint_dir: Path = Field(
        PROJECT_ROOT / "data" / "checkpoints", description="Spark Structured Streaming checkpoints."
    )

    online_backfill_seconds: int = Field(
        0,
        ge=0,
        description="How far behind real time the stream still writes windows to Redis; 0 = each group's TTL.",
    )

    stream_redis_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of Redis's time the stream's merges may take while it is caught up: it waits between "
        "merge calls so that the API's reads do not queue behind a whole batch (1 = no waiting).",
    )
    stream_pace_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="A micro-batch stops waiting between merge calls this fraction of the trigger interval after "
        "it started, so that it still fits in its interval (0 = never wait). A batch whose oldest event has waited "
        "more than (1 + this fraction) intervals never waits: the stream is behind.",
    )
    stream_max_restarts: int = Field(
        10,
        ge=0,
        description="How often in ten minutes the stream starts a failed query again from its checkpoint (after "
        "1, 2, 4 ... up to 60 s) before the process exits (0 = exit on the first failure).",
    )

    # --- API -------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Interface the API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the API and the web page.")
    api_artifact_poll_seconds: float = Field(
        30.0, gt=0, description="How often the API looks for new artifact versions and swaps them in."
    )
    api_candidate_pool: int = Field(
        200, ge=1, description="ALS candidates scored per request before filtering and reranking."
    )
    api_workers: int = Field(
        1, ge=1, description="uvicorn worker processes of `clickrec api` (they share the memory-mapped user factors)."
    )
    api_factor_dir: Path | None = Field(
        PROJECT_ROOT / "data" / "api-factors",
        description="Where the API memory-maps the ALS user factors (one file per candidates version); empty: keep them in RAM.",
    )
    api_compiled_dir: Path | None = Field(
        PROJECT_ROOT / "data" / "api-compiled",
        description="Where the API compiles the ranker's trees to C (needs gcc; about 13% less CPU per request); empty: XGBoost scores them.",
    )
    api_recent_users: int = Field(
        20_000, ge=0, description="Users whose top ALS candidates each API worker keeps (about 2.5 KB each; 0 = none)."
    )
    api_product_cache_seconds: float = Field(
        1.0, ge=0.0, description="How long the ranker reuses a product's two-minute features across requests when it "
        "cannot follow the stream's change feed (with it: until the product changes or its window ends; 0 = always read)."
    )
    api_product_cache_long_seconds: float = Field(
        30.0, ge=0.0, description="How long the ranker reuses a product's hourly and daily counters across requests (0 = always read)."
    )
    api_product_cache_long_rows: int = Field(
        25, ge=0, description="At most this many products' hourly and daily counters past API_PRODUCT_CACHE_LONG_SECONDS "
        "one request reads again, the oldest first, while they are under four times that old (older ones always; "
        "0 = no limit): a user's candidates then do not all come due in one request."
    )
    api_redis_timeout_seconds: float = Field(
        0.5, gt=0, description="Connect/read timeout of the API's Redis calls: past it, the API falls back."
    )
    api_redis_retry_seconds: float = Field(
        1.0, gt=0, description="After a Redis error, how long /recommendations answers from its fallbacks before trying Redis again."
    )
    api_publish_timeout_seconds: float = Field(
        5.0, gt=0, description="How long POST /events waits for the broker to acknowledge before answering 503."
    )

    # --- Native stack ---------------------------------------------------------
    run_dir: Path = Field(PROJECT_ROOT / ".run", description="Logs and PID files of the native stack.")
    data_dir: Path = Field(PROJECT_ROOT / "data", description="Generated datasets and local stores.")
    demo_data: bool = Field(True, description="On an empty stack, `make up` generates and replays a demo dataset.")
    demo_users: int = Field(2_000, ge=10, description="Users in the demo dataset.")
    demo_days: int = Field(3, ge=1, description="Days covered by the demo dataset.")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level of every process.")

    @field_validator("api_factor_dir", "api_compiled_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """API_FACTOR_DIR= (empty) means: keep the factors in RAM; API_COMPILED_DIR=: do not compile."""
        return None if value == "" else value

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests build their own `Settings`)."""
    return Settings()
