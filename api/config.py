"""Settings: the one documented list of environment variables ItemGate reads."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from engine.trust.delivery import SmtpSettings

DEFAULT_DATABASE_URL = "sqlite:///var/itemgate.db"


class ConfigError(RuntimeError):
    """Raised at start-up when a required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    # Each field names the variable it comes from; README "Settings" mirrors this list.
    database_url: str = DEFAULT_DATABASE_URL          # ITEMGATE_DATABASE_URL
    secret_key: str = ""                               # ITEMGATE_SECRET_KEY (required outside tests)
    s3_endpoint: str | None = None                     # ITEMGATE_S3_ENDPOINT; unset → `serve` starts weed
    s3_access_key: str = "itemgate"                    # ITEMGATE_S3_ACCESS_KEY
    s3_secret_key: str = "itemgate-secret"  # noqa: S105  ITEMGATE_S3_SECRET_KEY (embedded dev default)
    s3_bucket: str = "itemgate"                        # ITEMGATE_S3_BUCKET
    max_upload_mb: int = 200                           # ITEMGATE_MAX_UPLOAD_MB
    data_dir: str = "var"                              # ITEMGATE_DATA_DIR (embedded S3 data, logs)
    token_ttl_hours: int = 12                          # ITEMGATE_TOKEN_TTL_HOURS
    session_minutes: int = 30                          # ITEMGATE_SESSION_MINUTES (web session timeout)
    secure_cookies: bool = False                       # ITEMGATE_SECURE_COOKIES (set 1 behind HTTPS)
    tick_seconds: int = 60                             # ITEMGATE_TICK_SECONDS (serve's timer loop)
    log_json: bool = True                              # ITEMGATE_LOG_JSON
    audit_retention_days: int = 180                    # ITEMGATE_AUDIT_RETENTION_DAYS (at least 180)
    orphan_grace_hours: int = 24                       # ITEMGATE_ORPHAN_GRACE_HOURS (fsck --repair)
    login_max_failures: int = 5                        # ITEMGATE_LOGIN_MAX_FAILURES per user+IP per window
    login_user_max_failures: int = 20                  # ITEMGATE_LOGIN_USER_MAX_FAILURES per user, all IPs
    login_ip_max_failures: int = 50                    # ITEMGATE_LOGIN_IP_MAX_FAILURES per IP, all users
    login_window_seconds: int = 300                    # ITEMGATE_LOGIN_WINDOW_SECONDS
    proxy_hops: int = 0                                # ITEMGATE_PROXY_HOPS (trusted X-Forwarded-For hops)
    evidence_lock: bool = True                         # ITEMGATE_EVIDENCE_LOCK (off: run on a bucket without)
    audit_anchor_minutes: int = 5                      # ITEMGATE_AUDIT_ANCHOR_MINUTES (serve's anchor loop)
    max_json_kb: int = 256                             # ITEMGATE_MAX_JSON_KB (JSON request bodies)
    model_cache: bool = True                           # ITEMGATE_MODEL_CACHE (off: cold mode, nothing kept)
    smtp_host: str | None = None                       # ITEMGATE_SMTP_HOST (unset: no e-mail is sent)
    smtp_port: int = 25                                # ITEMGATE_SMTP_PORT
    smtp_user: str | None = None                       # ITEMGATE_SMTP_USER
    smtp_password: str | None = None                   # ITEMGATE_SMTP_PASSWORD
    smtp_from: str = "itemgate@localhost"              # ITEMGATE_SMTP_FROM
    smtp_mode: str = "starttls"                        # ITEMGATE_SMTP_MODE: starttls | ssl | insecure
    delivery_seconds: int = 10                         # ITEMGATE_DELIVERY_SECONDS (serve's notification loop)
    cjk_font: str | None = None                        # ITEMGATE_CJK_FONT (Chinese PDFs; unset: Noto CJK)
    expression_ms: int = 1000                          # ITEMGATE_EXPRESSION_MS (wall time per evaluation)
    expression_steps: int = 1_000_000                  # ITEMGATE_EXPRESSION_STEPS (steps per evaluation)
    expression_size: int = 1_000_000                   # ITEMGATE_EXPRESSION_SIZE (elements+chars per value)
    instance_state_kb: int = 1024                      # ITEMGATE_INSTANCE_STATE_KB (serialized state per item)
    tick_instance_ms: int = 5000                       # ITEMGATE_TICK_INSTANCE_MS (tick's work per instance)
    testing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def smtp(self) -> SmtpSettings:
        return SmtpSettings(host=self.smtp_host, port=self.smtp_port, username=self.smtp_user,
                            password=self.smtp_password, sender=self.smtp_from, mode=self.smtp_mode)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _switch(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be on or off, got {env.get(name)!r}")


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _on_off(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in {"on", "1", "true", "yes"}:
        return True
    if raw in {"off", "0", "false", "no"}:
        return False
    raise ConfigError(f"{name} must be on or off, got {env.get(name)!r}")


def load_settings(env: dict[str, str] | None = None, *, testing: bool = False, **overrides: Any) -> Settings:
    """Read settings from the environment; a missing secret fails here, at start, not on first use."""
    env = dict(os.environ if env is None else env)
    settings = Settings(
        database_url=env.get("ITEMGATE_DATABASE_URL") or DEFAULT_DATABASE_URL,
        secret_key=env.get("ITEMGATE_SECRET_KEY", ""),
        s3_endpoint=env.get("ITEMGATE_S3_ENDPOINT") or None,
        s3_access_key=env.get("ITEMGATE_S3_ACCESS_KEY") or "itemgate",
        s3_secret_key=env.get("ITEMGATE_S3_SECRET_KEY") or "itemgate-secret",
        s3_bucket=env.get("ITEMGATE_S3_BUCKET") or "itemgate",
        max_upload_mb=_int(env, "ITEMGATE_MAX_UPLOAD_MB", 200),
        data_dir=env.get("ITEMGATE_DATA_DIR") or "var",
        token_ttl_hours=_int(env, "ITEMGATE_TOKEN_TTL_HOURS", 12),
        session_minutes=_int(env, "ITEMGATE_SESSION_MINUTES", 30),
        secure_cookies=_bool(env.get("ITEMGATE_SECURE_COOKIES"), False),
        tick_seconds=_int(env, "ITEMGATE_TICK_SECONDS", 60),
        log_json=_bool(env.get("ITEMGATE_LOG_JSON"), True),
        audit_retention_days=_int(env, "ITEMGATE_AUDIT_RETENTION_DAYS", 180),
        orphan_grace_hours=_int(env, "ITEMGATE_ORPHAN_GRACE_HOURS", 24),
        login_max_failures=_int(env, "ITEMGATE_LOGIN_MAX_FAILURES", 5),
        login_user_max_failures=_int(env, "ITEMGATE_LOGIN_USER_MAX_FAILURES", 20),
        login_ip_max_failures=_int(env, "ITEMGATE_LOGIN_IP_MAX_FAILURES", 50),
        login_window_seconds=_int(env, "ITEMGATE_LOGIN_WINDOW_SECONDS", 300),
        proxy_hops=_int(env, "ITEMGATE_PROXY_HOPS", 0),
        evidence_lock=_on_off(env, "ITEMGATE_EVIDENCE_LOCK", True),
        audit_anchor_minutes=_int(env, "ITEMGATE_AUDIT_ANCHOR_MINUTES", 5),
        max_json_kb=_int(env, "ITEMGATE_MAX_JSON_KB", 256),
        model_cache=_switch(env, "ITEMGATE_MODEL_CACHE", True),
        smtp_host=env.get("ITEMGATE_SMTP_HOST") or None,
        smtp_port=_int(env, "ITEMGATE_SMTP_PORT", 25),
        smtp_user=env.get("ITEMGATE_SMTP_USER") or None,
        smtp_password=env.get("ITEMGATE_SMTP_PASSWORD") or None,
        smtp_from=env.get("ITEMGATE_SMTP_FROM") or "itemgate@localhost",
        smtp_mode=(env.get("ITEMGATE_SMTP_MODE") or "starttls").strip().lower(),
        delivery_seconds=_int(env, "ITEMGATE_DELIVERY_SECONDS", 10),
        cjk_font=env.get("ITEMGATE_CJK_FONT") or None,
        expression_ms=_int(env, "ITEMGATE_EXPRESSION_MS", 1000),
        expression_steps=_int(env, "ITEMGATE_EXPRESSION_STEPS", 1_000_000),
        expression_size=_int(env, "ITEMGATE_EXPRESSION_SIZE", 1_000_000),
        instance_state_kb=_int(env, "ITEMGATE_INSTANCE_STATE_KB", 1024),
        tick_instance_ms=_int(env, "ITEMGATE_TICK_INSTANCE_MS", 5000),
        testing=testing,
    )
    settings = replace(settings, **overrides)
    if not settings.secret_key:
        if testing:
            settings = replace(settings, secret_key=secrets.token_hex(32))
        else:
            raise ConfigError("ITEMGATE_SECRET_KEY is required (set it to a long random string)")
    if settings.audit_retention_days < 180:
        raise ConfigError("ITEMGATE_AUDIT_RETENTION_DAYS must be at least 180 (audit records are kept 6 months)")
    if settings.orphan_grace_hours < 1:
        raise ConfigError("ITEMGATE_ORPHAN_GRACE_HOURS must be at least 1")
    if min(settings.login_max_failures, settings.login_user_max_failures, settings.login_ip_max_failures) < 1:
        raise ConfigError("the ITEMGATE_LOGIN_*_MAX_FAILURES limits must be at least 1")
    if settings.login_user_max_failures <= settings.login_max_failures:
        # Otherwise guesses from one address could lock the account out everywhere.
        raise ConfigError("ITEMGATE_LOGIN_USER_MAX_FAILURES must be greater than ITEMGATE_LOGIN_MAX_FAILURES")
    if settings.proxy_hops < 0:
        raise ConfigError("ITEMGATE_PROXY_HOPS must be 0 or more")
    if settings.audit_anchor_minutes < 1:
        raise ConfigError("ITEMGATE_AUDIT_ANCHOR_MINUTES must be at least 1")
    if settings.smtp_mode not in ("starttls", "ssl", "insecure"):
        raise ConfigError("ITEMGATE_SMTP_MODE must be starttls, ssl or insecure")
    if settings.delivery_seconds < 1:
        raise ConfigError("ITEMGATE_DELIVERY_SECONDS must be at least 1")
    if min(settings.expression_ms, settings.expression_steps, settings.expression_size,
           settings.instance_state_kb, settings.tick_instance_ms) < 1:
        raise ConfigError("the ITEMGATE_EXPRESSION_*, ITEMGATE_INSTANCE_STATE_KB and ITEMGATE_TICK_INSTANCE_MS "
                          "budgets must be at least 1")
    if settings.max_upload_mb <= 0:
        raise ConfigError("ITEMGATE_MAX_UPLOAD_MB must be positive")
    return settings
